"""docs/adding-a-method.md, proved: a method registered here only (builder + method card) and a recipe in a
temporary params.yaml go through train → evaluate → leaderboard without touching any other file."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from torch import Tensor, nn

from segrepro.cli import main
from segrepro.data import synth_dataset
from segrepro.data.transforms import ScaleChoices, TrainAugment
from segrepro.models import MethodCard, Protocol, SegOutput, register, register_card
from segrepro.models import registry
from segrepro.models.outputs import Outputs, wants

PARAMS = {
    "benchmark": {"toy-demo": {"method": "toy", "recipe": "demo", "dataset": "cityscapes",
                              "after": "data/cityscapes_prepared", "nproc": 1}},
    "data": {"cityscapes": "cs"},
    "train": {"toy": {"recipe": "demo"}},
    "recipes": {"toy": {
        "official": {"dataset": "cityscapes", "batch_size": 2, "iterations": 3, "optimizer": {"lr": 0.01},
                     "loss": {"terms": [{"output": "main", "loss": "ce"}, {"output": "aux", "loss": "ce",
                                                                            "weight": 0.4}]}},
        "demo": {"extends": "official", "workers": 0, "checkpoint_every": 1, "log_every": 1,
                 "optimizer": {"head_lr_mult": 10}},
    }},
}


class Toy(nn.Module):
    """Two convolutions: a stride-2 'backbone' and a 1×1 'head' with an auxiliary twin."""

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, num_classes, 1)
        self.aux = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: Tensor, outputs: Outputs = None) -> SegOutput:
        f = torch.relu(self.stem(x))
        if not wants(outputs, "aux"):
            return SegOutput(self.head(f), 2)
        return SegOutput(self.head(f), 2, {"aux": self.aux(f)}, {"aux": 2})


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.list_methods()  # the shipped methods first, so the copies below hold them
    for table in ("_REGISTRY", "_DEFAULT_VARIANT", "_CARDS"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    register("toy", "tiny", pretrained_source="mit", default=True)(lambda num_classes: Toy(num_classes))
    augment = TrainAugment((32, 32), ScaleChoices(0.5, 1.0, 0.25))
    register_card(MethodCard("toy", "supervised", "imagenet_rgb", augment, {"val": Protocol("official", crop=48)},
                             outputs=("main", "aux"), head_prefixes=("head", "aux")))


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_toy_method_trains_evaluates_and_reaches_the_leaderboard(toy: None, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    synth_dataset("cityscapes", tmp_path / "cs", "2,2,1", (64, 128), 0)
    try:
        assert _run(["train", "--method", "toy"]) == 0
        config = yaml.safe_load((tmp_path / "runs" / "toy" / "config.yaml").read_text())
        assert (config["normalization"], config["crop"], config["variant"]) == ("imagenet_rgb", 32, "tiny")
        assert config["optimizer"]["head_lr_mult"] == 10
        assert _run(["evaluate", "--method", "toy", "--checkpoint", "runs/toy/model.pt", "--device", "cpu",
                     "--workers", "0", "--no-mlflow"]) == 0
        metrics = json.loads((tmp_path / "runs" / "toy" / "eval" / "metrics.json").read_text())
        assert metrics["segrepro"]["protocol"].startswith("official: sliding 48/32")  # the card's protocol
        assert _run(["leaderboard", "--no-mlflow", "--methods", "toy"]) == 0  # the run folder, not the row
        board = (tmp_path / "leaderboard" / "leaderboard.md").read_text()
        assert "toy" in board and "demo" in board
    finally:
        mlflow.end_run()
