"""The whole cityscapes_benchmark graph under kfp.local.SubprocessRunner (the local build of the
same graph the cluster runs): prepare → train → evaluate → submit per method → leaderboard,
on a small synthetic Cityscapes with tiny models and two methods."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
METHODS = ["alignseg", "ann"]


@pytest.mark.slow
def test_local_pipeline_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kfp.local
    import mlflow

    from pipelines.cityscapes_benchmark import local_pipeline
    from segrepro.data import synth_dataset

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for method in METHODS:  # the fastest training that still writes every output
        params["train"][method].update(
            {"iterations": 1, "crop": 64, "batch_size": 2, "per_gpu_batch": 2, "workers": 0, "checkpoint_every": 1}
        )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)  # the local components read params.yaml from the working directory
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.MlflowClient(uri).search_experiments()  # create the schema once, not racily from two steps
    raw = synth_dataset("cityscapes", tmp_path / "raw" / "cityscapes", "2,1,1", "64x128", 0)

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    local_pipeline(METHODS)(methods=METHODS, recipe="demo", gpus=1, num_nodes=1, data_root=str(raw))

    (run_root,) = (tmp_path / "kfp").iterdir()
    dataset = run_root / "prepare" / "dataset"
    assert (dataset / "cityscapes" / "leftImg8bit" / "train").is_dir()
    assert list((dataset / "cityscapes_prepared").rglob("*_labelTrainIds.png"))
    seen = set()
    for iteration in sorted(run_root.glob("for-loop-*-iteration-*")):
        model = iteration / "train" / "model"
        summary = json.loads((model / "train_summary.json").read_text())
        assert (model / "model.pt").is_file() and summary["iterations"] == 1
        evaluated = iteration / "evaluate" / "results"
        eval_summary = json.loads((evaluated / "eval" / "eval_summary.json").read_text())
        assert eval_summary["method"] == summary["method"]
        assert (evaluated / "train_summary.json").is_file() and (evaluated / "eval" / "metrics.json").is_file()
        with zipfile.ZipFile(iteration / "submit" / "submission") as archive:
            pngs = [n for n in archive.namelist() if n.endswith(".png")]
        assert len(pngs) == 1  # one labelId PNG per synthetic test image
        seen.add(summary["method"])
    assert seen == set(METHODS)

    board = (run_root / "leaderboard" / "board").read_text()
    assert all(f"| {m} " in board for m in METHODS)
    assert (run_root / "leaderboard" / "page").read_text().startswith("<!DOCTYPE html>")
    scores = json.loads((run_root / "leaderboard" / "scores").read_text())
    assert {key.split("/")[0] for key in scores} == set(METHODS)
    shutil.rmtree(run_root)  # checkpoints are the bulk of the temp folder
