"""``scripts/gpu-check.sh``: the CPU smoke run end to end, and what the GPU image lacks stays off its path.

The GPU image has CUDA torch (≥ 2.11), numpy, pillow, pyyaml, typer, tqdm, numba, pandas and matplotlib,
nothing else. Both tests run under a ``sitecustomize`` that makes every other package the project
depends on unimportable (torchrun's ranks inherit it through PYTHONPATH).
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segrepro.gpu_check import CHECK_NAMES, PEAK_BF16_TFLOPS, markdown, peak_tflops
from segrepro.models.fixtures import fixture_files
from segrepro.models.registry import list_methods

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check.sh"
NOT_ON_GPU_IMAGE = ("mlflow", "dvc", "dvc_s3", "boto3", "botocore", "kfp", "pydantic", "pydantic_core", "ptflops",
                    "scipy", "zlib_ng")
VENDORED = ("cityscapesscripts", "pyquaternion")  # pure-python wheels in scripts/gpu-check-wheels
WHEELS = sorted((REPO / "scripts" / "gpu-check-wheels").glob("*.whl"))
POISON = f"""
import sys
from importlib.machinery import PathFinder

class _GpuImage:
    \"\"\"Refuse what the GPU image lacks; the vendored packages load only from a wheel on sys.path.\"\"\"
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in {VENDORED!r} and path is None:
            spec = PathFinder.find_spec(name, [p for p in sys.path if p.endswith(".whl")])
            if spec is None:
                raise ModuleNotFoundError(f"{{name}}: no vendored wheel on sys.path", name=name)
            return spec
        if top in {NOT_ON_GPU_IMAGE!r}:
            raise ModuleNotFoundError(f"{{name}} is not on the GPU image", name=name)
        return None

sys.meta_path.insert(0, _GpuImage())
"""


@pytest.fixture(scope="module")
def poisoned_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("poison")
    (site / "sitecustomize.py").write_text(POISON)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(site), PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def test_cpu_smoke_writes_a_row_per_method_and_check(tmp_path: Path, poisoned_env: dict[str, str]) -> None:
    out = tmp_path / "report"
    res = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", str(out)], env=poisoned_env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["smoke"] and report["ok"] and report["environment"]["device"] == "cpu"
    rows = report["rows"]
    assert not [r for r in rows if r["status"] == "fail"]
    per_method = {"fixtures", "train", "ddp", "eval", "channels_last", "compile"}
    for check in CHECK_NAMES:
        assert any(r["check"] == check for r in rows), check
    for check in per_method:
        assert {r["method"] for r in rows if r["check"] == check} == set(list_methods()), check
    assert {r["status"] for r in rows if r["check"] in ("train", "ddp", "eval", "metrics")} == {"pass"}
    assert {r["config"].split(" ", 1)[1].split(":")[0] for r in rows if r["check"] == "eval"} >= {
        "128×256 official", "128×256 ms-flip"}
    assert any(r["status"] == "pass" for r in rows if r["check"] == "fixtures")
    md = (out / "gpu-check.md").read_text()
    assert md.startswith("# CPU smoke") and md.count("\n| ") == len(rows) + 1  # header + one line per row
    assert "1 torch threads" in report["environment"]["machine"]


def test_gpu_check_path_imports_only_what_the_gpu_image_has(poisoned_env: dict[str, str]) -> None:
    """Every module the checks import (lazily included) loads with those packages refused."""
    code = (
        "import sys, segrepro.gpu_check as g\n"
        "from segrepro.models.registry import list_methods; list_methods()\n"
        "import segrepro.engine.losses, segrepro.engine.ssl_loss, segrepro.engine.distributed, segrepro.models.norm\n"
        "import segrepro.evaluation.inference, segrepro.evaluation.cityscapes_metrics, segrepro.models.bench\n"
        "import cityscapesscripts\n"
        "print(cityscapesscripts.__file__)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {NOT_ON_GPU_IMAGE!r}))\n"
    )
    env = {**poisoned_env, "PYTHONPATH": os.pathsep.join([poisoned_env["PYTHONPATH"], str(REPO / "src"),
                                                          *map(str, WHEELS)])}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    where, loaded = res.stdout.strip().splitlines()[-2:]
    assert "gpu-check-wheels" in where
    assert loaded == "[]"


def test_bad_input_is_one_error_line(tmp_path: Path, poisoned_env: dict[str, str]) -> None:
    res = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", "--fixtures", str(tmp_path), str(tmp_path / "o")],
                         env=poisoned_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: --fixtures") and "Traceback" not in res.stderr


def test_in_tree_fixtures_equal_the_reference(fixtures_dir: Path) -> None:
    """The copy the GPU image uses is byte-identical to ../shared/reference/fixtures."""
    local = REPO / "tests" / "fixtures" / "reference"
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == fixture_files()
    assert all(filecmp.cmp(local / f, fixtures_dir / f, shallow=False) for f in fixture_files())


def test_peak_table_and_markdown() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989 and peak_tflops("NVIDIA H100 PCIe") == 756
    assert peak_tflops("NVIDIA H200") == 989 and peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert peak_tflops("NVIDIA L4") == 121 and peak_tflops("NVIDIA L40S") == 362 and peak_tflops("Tesla T4") is None
    assert all(peak > 0 for _, peak in PEAK_BF16_TFLOPS)
    report = {"smoke": False, "environment": {"gpus": ["NVIDIA H200"]}, "seconds": 1.0, "budget_s": 480.0,
              "ok": True, "counts": {"below target": 1},
              "rows": [{"check": "roofline", "method": "ann", "config": "a|b", "status": "below target",
                        "metrics": {"fraction": 0.31}, "note": ""}]}
    md = markdown(report)
    assert md.startswith("# GPU check") and "| roofline | ann | a\\|b | below target | fraction 0.31 |" in md


def _groups(optimizer: torch.optim.Optimizer) -> list[dict[str, object]]:
    return [{k: v for k, v in g.items() if k != "params"} | {"n": len(g["params"])} for g in optimizer.param_groups]


@pytest.mark.parametrize("method", list_methods())
def test_official_recipe_is_what_training_resolves(method: str) -> None:
    """The GPU check reads params.yaml without the schema (no pydantic on its image); the batch, crop,
    optimiser and loss it trains with equal what `segrepro train` resolves for the official recipe."""
    from segrepro.engine.config import load_params
    from segrepro.engine.losses import build_criterion
    from segrepro.engine.objectives import self_supervised, supervised
    from segrepro.engine.recipe import resolve
    from segrepro.gpu_check import _optimizer, official_recipe
    from segrepro.models.registry import build

    params = load_params(REPO / "params.yaml")
    raw, recipe = official_recipe(params, method), resolve(params, method, "official")
    assert (raw["micro_batch"], raw["crop_hw"], raw["variant"]) == (recipe.micro_batch, recipe.crop_hw, recipe.variant)
    model = build(method, variant="tiny")
    train = self_supervised(recipe, model, 8) if recipe.self_supervised else supervised(recipe, model, 8)
    ours = _optimizer(raw, model)
    assert type(ours) is type(train.optimizer) and _groups(ours) == _groups(train.optimizer)
    if recipe.loss is None:
        return
    mine = build_criterion(raw["loss"], raw["ignore_index"])
    theirs = build_criterion(recipe.loss.model_dump(), recipe.ignore_index)
    assert (mine.terms, mine.ohem, mine.ignore_index) == (theirs.terms, theirs.ohem, theirs.ignore_index)
    weights = (mine.class_weights, theirs.class_weights)
    assert weights == (None, None) or torch.equal(*weights)  # type: ignore[arg-type]
