"""``segrepro evaluate`` end to end: files written, MLflow eval run (tags, metrics, table, artifacts), user errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from segrepro.cli import main
from segrepro.data import synth_dataset
from segrepro.evaluation.cityscapes_metrics import evaluate_cityscapes_folders
from segrepro.models import build
from segrepro.tracking.mlflow_tracker import MlflowTracker

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd with params.yaml, a synthetic Cityscapes, a tiny checkpoint and a finished training run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    synth_dataset("cityscapes", tmp_path / "cs", "1,2,1", (64, 128), 0)
    run_dir = tmp_path / "runs" / "alignseg"
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(build("alignseg", variant="tiny", num_classes=19).state_dict(), run_dir / "model.pt")
    train = MlflowTracker(run_name="alignseg-demo", tags={"stage": "train", "method": "alignseg"}, params={},
                          dataset="cityscapes")
    train.end()
    (run_dir / "train_summary.json").write_text(json.dumps({"mlflow_run_id": train.run_id}))
    yield tmp_path
    mlflow.end_run()


def test_evaluate_writes_reports_and_logs_an_eval_run(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = workspace / "runs" / "alignseg" / "model.pt"
    code = _run(["evaluate", "--method", "alignseg", "--checkpoint", str(ckpt), "--data", "cs", "--device", "cpu",
                 "--workers", "0", "--save-pred", "preds", "--overlays", "1"])
    assert code == 0
    assert "mIoU" in capsys.readouterr().out
    out = workspace / "runs" / "alignseg" / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    for field in ("averageScoreClasses", "averageScoreInstClasses", "classScores", "categoryInstScores"):
        assert field in metrics
    assert metrics["segrepro"]["protocol"].startswith("official: sliding 872/582")
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert [r["class"] for r in rows][:3] == ["road", "sidewalk", "building"] and len(rows) == 19
    for png in ("confusion.png", "per_class_iou.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 100
    assert len(list((out / "overlays").glob("*_overlay.png"))) == 1
    # the saved labelId PNGs give the same numbers through the folder evaluator
    folder = evaluate_cityscapes_folders(workspace / "cs", workspace / "preds", "val", workers=0)
    assert folder.average_scores["averageScoreClasses"] == pytest.approx(metrics["averageScoreClasses"], abs=1e-12)

    summary = json.loads((out / "eval_summary.json").read_text())
    train_id = json.loads((workspace / "runs" / "alignseg" / "train_summary.json").read_text())["mlflow_run_id"]
    client = MlflowClient()
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "evaluate" and run.data.tags["method"] == "alignseg"
    assert run.data.tags["parent_train_run_id"] == train_id == run.data.tags["mlflow.parentRunId"]  # nested
    assert run.info.experiment_id == client.get_run(train_id).info.experiment_id
    assert client.get_experiment(run.info.experiment_id).name == "segrepro-cityscapes"
    assert [(i.dataset.name, i.tags[0].value) for i in run.inputs.dataset_inputs] == [("cityscapes/val", "evaluation")]
    assert summary["eval_img_per_s"] > 0 and summary["peak_mem_MB"] > 0 and summary["images"] == 2
    assert "cpu_isa" in run.data.tags and "eval_img_per_s" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id, "overlays")]  # a sample of overlays as images
    assert run.data.metrics["mIoU"] == pytest.approx(metrics["averageScoreClasses"])
    assert "IoU/road" in run.data.metrics and run.data.params["crop"] == "872"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/metrics.json", "eval/confusion.png", "eval/per_class_iou.png", "eval/per_class.csv",
            "eval/offsets.png"} <= artifacts  # AlignSeg's learned-offset figure on the split's first image
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "per_class_iou.json", str(workspace))).read_text())
    assert table["columns"] == ["class", "IoU", "iIoU"] and len(table["data"]) == 19


def test_evaluate_explicit_protocol_and_bad_checkpoint(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = workspace / "runs" / "alignseg" / "model.pt"
    code = _run(["evaluate", "--method", "alignseg", "--checkpoint", str(ckpt), "--data", "cs", "--device", "cpu",
                 "--workers", "0", "--protocol", "ss", "--scales", "0.5,1", "--flip", "--no-mlflow", "--out", "ev"])
    assert code == 0
    assert json.loads((workspace / "ev" / "metrics.json").read_text())["segrepro"]["protocol"] == \
        "ss: whole image, scales [0.5, 1.0], flip True"
    capsys.readouterr()
    broken = workspace / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    for path in (broken, workspace / "missing.pt"):
        assert _run(["evaluate", "--method", "alignseg", "--checkpoint", str(path), "--data", "cs",
                     "--no-mlflow"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}") and "Traceback" not in err and err.count("\n") == 1
    torch.save(build("gald", variant="tiny", num_classes=19).state_dict(), workspace / "gald.pt")
    assert _run(["evaluate", "--method", "alignseg", "--checkpoint", str(workspace / "gald.pt"), "--data", "cs",
                 "--no-mlflow"]) == 1
    assert "does not fit alignseg" in capsys.readouterr().err
    assert _run(["evaluate", "--method", "alignseg", "--checkpoint", str(ckpt), "--data", "cs", "--split", "test",
                 "--no-mlflow", "--device", "cpu"]) == 1
    assert "withheld" in capsys.readouterr().err


def test_evaluate_self_supervised_reports_both_protocols(tmp_path: Path) -> None:
    from segrepro import stages

    synth_dataset("voc", tmp_path / "voc", "1,2", (64, 64), 0)
    torch.manual_seed(0)
    torch.save(build("alignseg_ssl", variant="tiny").state_dict(), tmp_path / "ssl.pt")  # as training builds it
    trained = stages.TrainedModel("alignseg_ssl", tmp_path / "ssl.pt", params_path=PARAMS, device="cpu")
    summary = stages.evaluate(trained, tmp_path / "voc", out=tmp_path / "ev", track=False)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) >= {"official_per_image_majority", "dataset_hungarian"}
    assert metrics["official_per_image_majority"]["mIoU"] == pytest.approx(summary["official_per_image_majority_mIoU"])
    assert 0.0 <= summary["dataset_hungarian_mIoU"] <= 1.0
    assert metrics["dataset_hungarian"]["protocol"] == "dataset_hungarian"
