"""The CPU twins of the non-Cityscapes recipes run end to end on their synthetic datasets: train a few
iterations, evaluate, then the leaderboard shows each under its dataset with its official twin's paper number
and no Δ (a synthetic stand-in is not the paper's data)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from segrepro.cli import main
from segrepro.tracking.leaderboard import build_leaderboard
from segrepro.tracking.paper_results import load_paper_index

REPO = Path(__file__).resolve().parents[1]
TWINS = [  # (method, twin recipe, dataset, official twin's paper mIoU)
    ("ann", "demo_ade20k", "ade20k", 45.24),
    ("ann", "demo_context", "pascal_context", 52.8),
    ("alignseg_ssl", "demo_coco27", "coco_stuff27", 35.1),
]
TINY = {"ann": ["iterations=2", "crop=48", "batch_size=2", "per_gpu_batch=2"],
        "alignseg_ssl": ["epochs=1", "batch_size=2", "per_gpu_batch=2"]}


def _cli(*argv: str) -> None:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    assert done.value.code == 0, argv


def test_twins_train_evaluate_and_lead_under_their_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    rows = []
    for method, recipe, dataset, _ in TWINS:
        data = tmp_path / "data" / dataset
        if not data.is_dir():
            _cli("data", "synth", dataset, "--out", str(data), "--size", "64x64", "--split-sizes", "4,2")
            _cli("data", "prepare", dataset, "--root", str(data))
        row = f"{method}-{recipe}"
        sets = [a for s in [*TINY[method], "workers=0", "checkpoint_every=1"] for a in ("--set", f"train.{method}.{s}")]
        _cli("train", "--method", method, "--recipe", recipe, "--data", str(data), "--out", f"runs/{row}",
             "--no-resume", *sets)
        _cli("evaluate", "--method", method, "--recipe", recipe, "--checkpoint", f"runs/{row}/model.pt",
             "--data", str(data), "--out", f"runs/{row}/eval")
        rows.append(row)

    table = build_leaderboard(tmp_path / "runs", rows, None, load_paper_index(tmp_path / "params.yaml"))
    table = table.set_index("recipe")
    assert list(table["dataset"]) == sorted(d for _, _, d, _ in TWINS)  # grouped by dataset
    for _, recipe, dataset, paper in TWINS:
        entry = table.loc[recipe]
        assert entry["dataset"] == dataset and entry["split"] == "val" and entry["paper_mIoU"] == paper
        assert 0.0 <= entry["mIoU"] <= 100.0 and math.isnan(entry["delta"])
        assert entry["delta_note"].startswith("no Δ: synthetic stand-in")


def test_coarse_schedule_twin_chains_three_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """GALD's fine → coarse → fine twin: each stage starts from the previous run's model.pt (strict load),
    records its digest, and a stage whose first stage has not run is one error naming what to train."""
    import json

    import torch

    from segrepro import stages
    from segrepro.data.manifest import sha256_file
    from segrepro.errors import UserError
    from segrepro.models import build

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    data = tmp_path / "data" / "cityscapes"
    _cli("data", "synth", "cityscapes", "--out", str(data), "--size", "64x128", "--split-sizes", "2,2,1,2")
    _cli("data", "prepare", "cityscapes", "--root", str(data))
    sets = [a for s in ["iterations=2", "crop=48", "batch_size=2", "per_gpu_batch=2", "workers=0",
                        "checkpoint_every=1"] for a in ("--set", f"train.gald.{s}")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as missing:
        main(["train", "--method", "gald", "--recipe", "demo_coarse", "--data", str(data), "--out",
              "runs/gald-demo_coarse", *sets])
    err = capsys.readouterr().err.strip()
    assert missing.value.code == 2 and err.count("\n") == 0
    assert err.startswith("error: runs/gald-demo_coarse_stage2/model.pt: trained weights of gald/demo_coarse_stage2")
    assert "--recipe demo_coarse_stage2 --out runs/gald-demo_coarse_stage2" in err
    assert not Path("runs/gald-demo_coarse").exists()

    previous = None
    for recipe in ("demo", "demo_coarse_stage2", "demo_coarse"):
        _cli("train", "--method", "gald", "--recipe", recipe, "--data", str(data), "--out", f"runs/gald-{recipe}",
             "--no-resume", *sets)
        summary = json.loads(Path(f"runs/gald-{recipe}/train_summary.json").read_text())
        if previous is None:
            assert "init_sha256" not in summary
        else:
            assert summary["init_checkpoint"] == f"runs/gald-{previous}/model.pt"
            assert summary["init_sha256"] == sha256_file(Path(summary["init_checkpoint"]))
        previous = recipe

    _, cfg = stages.resolved_config("gald", "demo_coarse", sets[1::2], Path("params.yaml"))
    start = stages.init_weights(cfg, Path("runs/gald-demo_coarse"))
    assert start is not None and start.source == "gald/demo_coarse_stage2"
    model = build("gald", variant=cfg.variant, num_classes=19)
    start.load_into(model)
    saved = torch.load(start.path, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="do not fit this recipe's model"):
        start.load_into(build("gald", variant=cfg.variant, num_classes=7))
    _cli("evaluate", "--method", "gald", "--checkpoint", "runs/gald-demo_coarse/model.pt", "--data", str(data),
         "--out", "runs/gald-demo_coarse/eval")
    table = build_leaderboard(tmp_path / "runs", ["gald-demo_coarse"], None,
                              load_paper_index(tmp_path / "params.yaml")).set_index("recipe")
    assert table.loc["demo_coarse", "paper_mIoU"] == 82.9
