"""dvc.yaml's code deps equal the import graph of each stage's command (segrepro.depgraph); no DVC run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from segrepro import depgraph

REPO = Path(__file__).resolve().parents[1]


def test_dvc_yaml_code_deps_equal_the_derived_imports() -> None:
    """Fails when a stage is added or a module's imports change without `python -m segrepro.depgraph --write`."""
    assert depgraph.check(REPO / "dvc.yaml") == []


def test_commands_depend_on_what_they_run() -> None:
    deps = depgraph.derived_deps(REPO / "dvc.yaml")
    assert "src/segrepro/evaluation/inference.py" in deps["submit"]  # sliding-window inference
    assert "src/segrepro/evaluation/inference.py" in deps["evaluate"]
    assert "src/segrepro/evaluation/quick_val.py" in deps["train"]
    assert "src/segrepro/models" in deps["leaderboard"]  # FLOPs of the built models
    assert "src/segrepro/submission" not in deps["train"] and "src/segrepro/engine/trainer.py" not in deps["evaluate"]


def test_dynamic_registries_pull_in_their_package() -> None:
    graph = depgraph.ImportGraph(REPO / "src")
    (func,) = graph.commands_of("segrepro data prepare voc --root data/voc")
    modules = graph.modules_of(func)
    assert {"segrepro.data.voc", "segrepro.data.cityscapes_prepare"} <= modules  # lazily imported by name
    assert not any(m.startswith("segrepro.models") for m in modules)
    chained = graph.commands_of("segrepro submit build --method ann --out a.zip && segrepro submit validate a.zip")
    assert chained == ["submit_build_cmd", "submit_validate_cmd"]


def test_check_names_the_stale_stage_and_write_fixes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(
        REPO / "src" / "segrepro", tmp_path / "src" / "segrepro", ignore=shutil.ignore_patterns("__pycache__")
    )
    original = (REPO / "dvc.yaml").read_text()
    stale = original.replace("        - src/segrepro/evaluation/quick_val.py\n", "", 1)
    assert stale != original
    (tmp_path / "dvc.yaml").write_text(stale)
    assert depgraph.main(["--dvc", str(tmp_path / "dvc.yaml"), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "stage train" in err and "quick_val.py" in err
    assert depgraph.main(["--dvc", str(tmp_path / "dvc.yaml"), "--write"]) == 0
    assert (tmp_path / "dvc.yaml").read_text() == original  # comments and layout survive the rewrite
