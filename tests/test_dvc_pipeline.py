"""`dvc repro` of the real dvc.yaml in a temporary git repo: 2 supervised methods, tiny sizes.

Fresh run → every stage; a params change to one method → only its branch and the leaderboard;
then a no-op. The repo's dvc.yaml and params.yaml are used as they are, only params values shrink.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROWS = {f"{m}-demo": {"method": m, "recipe": "demo", "dataset": "cityscapes"} for m in ("alignseg", "ann")}
TINY = {"iterations": 2, "crop": 64, "batch_size": 2, "per_gpu_batch": 2, "workers": 0, "checkpoint_every": 1,
        "log_every": 1}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _project(tmp: Path) -> Path:
    work = tmp / "project"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work)
    shutil.copytree(REPO / "src" / "segrepro", work / "src" / "segrepro", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["benchmark"] = dict(ROWS)
    params["submit"] = {"alignseg-demo": {"method": "alignseg", "recipe": "demo"}}
    params["synth"] = {"cityscapes": {"size": "64x128", "split_sizes": "4,2,2", "seed": 0}}
    for row in ROWS.values():
        params["train"][row["method"]].update(TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    return work


def test_repro_branch_rerun_and_noop(tmp_path: Path) -> None:
    work = _project(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], work, env)
    _run([str(BIN / "dvc"), "init", "-q"], work, env)

    first = _run([str(BIN / "dvc"), "repro"], work, env)
    expected = {"synth@cityscapes", "leaderboard"} | {f"{s}@{m}" for s in ("train", "evaluate") for m in ROWS}
    assert _ran(first) == expected | {"submit@alignseg-demo"}
    assert (work / "runs" / "alignseg-demo" / "submission.zip").is_file()
    board = json.loads((work / "leaderboard" / "metrics.json").read_text())
    assert set(board) == {"alignseg/demo", "ann/demo"}
    assert "synthetic stand-in" in (work / "leaderboard" / "leaderboard.md").read_text()
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    alignseg_model = lock["train@alignseg-demo"]["outs"]

    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"]["ann"]["optimizer"] = {"lr": 0.02}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run([str(BIN / "dvc"), "status"], work, env)
    assert "train@ann-demo" in status and "train@alignseg-demo" not in status
    second = _run([str(BIN / "dvc"), "repro"], work, env)
    assert _ran(second) == {"train@ann-demo", "evaluate@ann-demo", "leaderboard"}
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    assert lock["train@alignseg-demo"]["outs"] == alignseg_model
    assert lock["train@ann-demo"]["params"]["params.yaml"]["train.ann"]["optimizer"] == {"lr": 0.02}

    third = _run([str(BIN / "dvc"), "repro"], work, env)
    assert _ran(third) == set()
    assert "up to date" in _run([str(BIN / "dvc"), "status"], work, env)
