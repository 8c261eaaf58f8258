"""The whole cityscapes_benchmark graph under kfp.local.SubprocessRunner (the local build of the
same graph the cluster runs): prepare → train → evaluate → submit per row → collect → leaderboard,
on a small synthetic Cityscapes with tiny models: two rows, the second a multi-stage one (init_from)."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROWS = {"ann-demo": {"method": "ann", "recipe": "demo", "dataset": "cityscapes", "after": "data/cityscapes_prepared", "nproc": 1},
        "ann-demo_ft": {"method": "ann", "recipe": "demo_ft", "dataset": "cityscapes", "after": "runs/ann-demo/model.pt", "nproc": 1}}


@pytest.mark.slow
def test_local_pipeline_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kfp.local
    import mlflow

    from segrepro.data import synth_dataset
    from segrepro_components import DATASET_SUBDIR
    from segrepro_pipelines.cityscapes_benchmark import local_pipeline

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["benchmark"] = ROWS
    params["submit"] = {"ann-demo_ft": {"method": "ann", "recipe": "demo_ft"}}
    params["recipes"]["ann"]["demo_ft"] = {"extends": "demo", "init_from": "ann/demo"}  # a second stage
    params["train"]["ann"].update(  # the fastest training that still writes every output
        {"iterations": 1, "crop": 64, "batch_size": 2, "per_gpu_batch": 2, "workers": 0, "checkpoint_every": 1}
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)  # the local components read params.yaml from the working directory
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.MlflowClient(uri).search_experiments()  # create the schema once, not racily from two steps
    synth_dataset("cityscapes", tmp_path / "raw" / "cityscapes", "2,1,1", "64x128", 0)

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    local_pipeline(tmp_path / "params.yaml")(gpus=1, num_nodes=1, data_root=str(tmp_path / "raw"))

    (run_root,) = (tmp_path / "kfp").iterdir()
    dataset = run_root / "prepare" / "dataset"
    assert (dataset / DATASET_SUBDIR / "leftImg8bit" / "train").is_dir()
    assert list((dataset / f"{DATASET_SUBDIR}_prepared").rglob("*_labelTrainIds.png"))
    first = json.loads((run_root / "train" / "model" / "train_summary.json").read_text())
    second = json.loads((run_root / "train-2" / "model" / "train_summary.json").read_text())
    assert (first["recipe"], second["recipe"]) == ("demo", "demo_ft") and first["iterations"] == 1
    assert second["init_checkpoint"] == str(run_root / "train" / "model" / "model.pt")  # the first's artifact
    for task in ("evaluate", "evaluate-2"):
        evaluated = run_root / task / "results"
        assert (evaluated / "train_summary.json").is_file() and (evaluated / "eval" / "metrics.json").is_file()
    with zipfile.ZipFile(run_root / "submit" / "submission") as archive:
        pngs = [n for n in archive.namelist() if n.endswith(".png")]
    assert len(pngs) == 1  # one labelId PNG per synthetic test image
    assert sorted(p.name for p in (run_root / "collect-2" / "runs").iterdir()) == sorted(ROWS)

    board = (run_root / "leaderboard" / "board").read_text()
    assert "demo_ft" in board and "| ann " in board
    assert (run_root / "leaderboard" / "page").read_text().startswith("<!DOCTYPE html>")
    scores = json.loads((run_root / "leaderboard" / "scores").read_text())
    assert set(scores) == {"ann/demo", "ann/demo_ft"}
    shutil.rmtree(run_root)  # checkpoints are the bulk of the temp folder
