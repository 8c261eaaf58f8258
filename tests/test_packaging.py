"""What `pip install .` gives: the wheel's packages and requirements, and the core without the optional layers.

The wheel is built offline from a copy of the sources (`pip wheel --no-deps --no-build-isolation`), then
installed with `pip install --no-deps --target` and imported from there in fresh interpreters, so the
installed layout is what is tested, not the source tree.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = {"mlflow", "dvc", "dvc-s3", "boto3", "kfp", "kfp-kubernetes", "kubeflow"}
# Top-level modules of the optional libraries, none of which the core may import.
OPTIONAL_MODULES = {"mlflow", "dvc", "dvc_s3", "boto3", "botocore", "kfp", "kubeflow", "kubernetes"}
KUBEFLOW_LAYER = {"segrepro_pipelines": REPO / "pipelines", "segrepro_components": REPO / "components"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("src", "pipelines", "components"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (built,) = out.glob("segrepro-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return target


def _python(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that imports segrepro from ``site`` (the repo is not on its path)."""
    env = {**os.environ, "PYTHONPATH": str(site), "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _metadata(wheel: Path) -> tuple[email.message.Message, str]:
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
        return email.parser.Parser().parsestr(archive.read(info).decode()), entry_points


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_wheel_installs_only_segrepro_owned_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"segrepro", *KUBEFLOW_LAYER}  # no generic `pipelines`/`components`
    # pyproject.toml lists the packages by hand (package-dir mapping): every one of them is in
    for init in (REPO / "src").rglob("__init__.py"):
        assert init.relative_to(REPO / "src").as_posix() in names, f"{init.parent} missing from [tool.setuptools]"
    for package, folder in KUBEFLOW_LAYER.items():
        assert {f"{package}/{p.name}" for p in folder.glob("*.py")} <= set(names)
    assert "segrepro/py.typed" in names


def test_core_requirements_leave_tracking_and_kubeflow_to_extras(wheel: Path) -> None:
    meta, entry_points = _metadata(wheel)
    requires = meta.get_all("Requires-Dist") or []
    core = {_name(r) for r in requires if "extra ==" not in r}
    extras: dict[str, set[str]] = {}
    for req in requires:
        found = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if found:
            extras.setdefault(found[1], set()).add(_name(req))
    assert {"torch", "numpy", "pillow"} <= core and not core & OPTIONAL, core
    assert set(meta.get_all("Provides-Extra") or []) >= {"pipeline", "kubeflow", "all", "test"}
    assert {"mlflow", "dvc", "dvc-s3", "boto3"} <= extras["pipeline"]
    assert {"kfp", "kfp-kubernetes", "kubeflow"} <= extras["kubeflow"]
    assert extras["all"] == {"segrepro"} and "pytest" in extras["test"]  # all = segrepro[pipeline,kubeflow]
    assert re.search(r"^\[segrepro\.commands\]\npipeline = segrepro_pipelines\.cli:app$", entry_points, re.M)


def test_installed_core_imports_no_optional_library(installed: Path, tmp_path: Path) -> None:
    res = _python(
        installed,
        f"""
        import sys
        import segrepro.models, segrepro.data, segrepro.engine, segrepro.evaluation, segrepro.cli
        assert segrepro.models.__file__.startswith({str(installed)!r}), segrepro.models.__file__
        loaded = {sorted(OPTIONAL_MODULES)!r}
        assert not set(loaded) & set(sys.modules), sorted(set(loaded) & set(sys.modules))
    """,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]


def test_installed_kubeflow_layer_is_reached_through_the_cli(installed: Path, tmp_path: Path) -> None:
    """The `pipeline` group comes from the entry point; components build their command lines from it."""
    res = _python(
        installed,
        f"""
        import segrepro_components, segrepro_pipelines.cli
        from segrepro_components.cli_args import segrepro_args
        assert segrepro_pipelines.cli.__file__.startswith({str(installed)!r}), segrepro_pipelines.cli.__file__
        print(segrepro_args(["pipeline", "fetch"], "s3://bucket/cityscapes", "/tmp/dst"))
    """,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "['segrepro', 'pipeline', 'fetch', 's3://bucket/cityscapes', '/tmp/dst']" in res.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["train", "--method", "ann"], "pipeline"),
        (["pipeline", "compile", "--out", "p.yaml"], "kubeflow"),
    ],
)
def test_missing_extra_is_one_error_line(installed: Path, tmp_path: Path, argv: list[str], extra: str) -> None:
    """Without the optional libraries (blocked in sys.modules), a command that needs one names the extra."""
    res = _python(
        installed,
        f"""
        import sys
        for name in {sorted(OPTIONAL_MODULES)!r}:
            sys.modules[name] = None  # what an environment without them gives: ImportError
        from segrepro.cli import main
        main({argv + ["--params", str(REPO / "params.yaml")] if argv[0] == "train" else argv!r})
    """,
        tmp_path,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"pip install 'segrepro[{extra}]'" in lines[0], lines
