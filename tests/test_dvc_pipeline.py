"""`dvc repro` of the real dvc.yaml in a temporary git repo: 2 supervised methods, tiny sizes.

Fresh run → every stage; a params change to one method → only its branch and the leaderboard;
then a no-op; then a comment appended to one module → `dvc status` lists exactly the stages whose command
imports it. The repo's dvc.yaml and params.yaml are used as they are, only params values shrink.
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

from segrepro import depgraph

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROWS = {f"{m}-demo": {"method": m, "recipe": "demo", "dataset": "cityscapes", "after": "data/cityscapes_prepared", "nproc": 1}
        for m in ("alignseg", "ann")}
TINY = {"iterations": 2, "crop": 64, "batch_size": 2, "per_gpu_batch": 2, "workers": 0, "checkpoint_every": 1,
        "log_every": 1}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


# Records which segrepro modules every Python process of the repro really imported (checked against the deps).
_TRACE_HOOK = """import atexit, json, os, sys
def _dump():
    mods = sorted(m for m in sys.modules if m == "segrepro" or m.startswith("segrepro."))
    if mods:
        with open(os.environ["SEGREPRO_IMPORT_TRACE"], "a") as f:
            f.write(json.dumps({"argv": sys.argv[1:], "modules": mods}) + "\\n")
atexit.register(_dump)
"""


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
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_TRACE_HOOK)
    trace = tmp_path / "imports.jsonl"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
           "SEGREPRO_IMPORT_TRACE": str(trace),
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

    # What each stage's command really imported is covered by the stage's derived code deps.
    derived = depgraph.derived_deps(work / "dvc.yaml")
    cmds = {" ".join(stage["cmd"].split()): name for name, stage in lock.items()}
    traced = [json.loads(line) for line in trace.read_text().splitlines()]
    for record in traced:
        stage = cmds.get(" ".join(["segrepro", *record["argv"]]))
        if stage is None:
            continue
        deps = derived[stage.split("@")[0]]
        for module in record["modules"]:
            path = Path(*module.split("."))
            files = {f"src/{path}.py", f"src/{path}/__init__.py"}
            assert any(f == d or f.startswith(d + "/") for f in files for d in deps), f"{stage} imports {module}"
    assert {cmds.get(" ".join(["segrepro", *r["argv"]])) for r in traced} >= set(lock)

    # A comment appended to one module: dvc status lists exactly the stages whose command imports it.
    must = {"evaluation/inference.py": {"submit@alignseg-demo", "evaluate@alignseg-demo", "evaluate@ann-demo"},
            "evaluation/quick_val.py": {"train@alignseg-demo", "train@ann-demo"},
            "models/registry.py": {"leaderboard"}}
    for module, required in must.items():
        path = work / "src" / "segrepro" / module
        original = path.read_text()
        path.write_text(original + "# touched\n")
        proc = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        path.write_text(original)
        changed = set(json.loads(proc.stdout))
        target = f"src/segrepro/{module}"
        deps_of = {stage: derived[stage.split("@")[0]] for stage in lock}
        importers = {s for s, deps in deps_of.items() if any(target == d or target.startswith(f"{d}/") for d in deps)}
        assert required <= changed == importers, module
    assert "up to date" in _run([str(BIN / "dvc"), "status"], work, env)


CHAIN = ("gald-demo", "gald-demo_coarse_stage2", "gald-demo_coarse")  # GALD's fine → coarse → fine twin


def test_multi_stage_rows_rerun_on_the_first_stage(tmp_path: Path) -> None:
    """A multi-stage recipe's row depends on the previous stage's model.pt (its ``after``): stages train in
    chain order, and a change to the first stage's params reruns the later ones on the new weights."""
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work)
    shutil.copytree(REPO / "src" / "segrepro", work / "src" / "segrepro", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["benchmark"] = {row: {**params["benchmark"][row], "nproc": 1} for row in CHAIN}  # TINY: 2 images
    params["submit"] = {}
    params["synth"] = {"cityscapes": {"size": "64x128", "split_sizes": "2,2,1,2", "seed": 0}}
    params["train"]["gald"].update(TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    _run(["git", "init", "-q"], work, env)
    _run([str(BIN / "dvc"), "init", "-q"], work, env)

    def repro() -> tuple[list[str], dict]:
        out = _run([str(BIN / "dvc"), "repro", f"train@{CHAIN[-1]}"], work, env)
        lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
        return re.findall(r"Running stage '(train@[^']+)'", out), lock

    def model_md5(lock: dict, row: str) -> str:
        return next(o["md5"] for o in lock[f"train@{row}"]["outs"] if o["path"] == f"runs/{row}/model.pt")

    def init_md5(lock: dict, row: str, first: str) -> str:
        return next(d["md5"] for d in lock[f"train@{row}"]["deps"] if d["path"] == f"runs/{first}/model.pt")

    ran, lock = repro()
    assert ran == [f"train@{row}" for row in CHAIN]  # chain order, the only order that can work
    for first, second in zip(CHAIN, CHAIN[1:]):
        assert init_md5(lock, second, first) == model_md5(lock, first)
        summary = json.loads((work / "runs" / second / "train_summary.json").read_text())
        assert summary["init_checkpoint"] == f"runs/{first}/model.pt"
    before = model_md5(lock, CHAIN[0])

    params["recipes"]["gald"]["demo"]["optimizer"] = {"lr": 0.02}  # the first stage's own recipe
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json", "--with-deps", f"train@{CHAIN[-1]}"], work, env))
    assert {f"train@{row}" for row in CHAIN} <= set(status)
    ran, lock = repro()
    assert ran == [f"train@{row}" for row in CHAIN]
    assert model_md5(lock, CHAIN[0]) != before
    assert init_md5(lock, CHAIN[1], CHAIN[0]) == model_md5(lock, CHAIN[0])
    assert init_md5(lock, CHAIN[2], CHAIN[1]) == model_md5(lock, CHAIN[1])
