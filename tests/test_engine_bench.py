"""``segrepro bench train`` runs every method's demo recipe end to end (one step; nothing is timed here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segrepro.cli import main
from segrepro.models import list_methods

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.mark.parametrize("method", list_methods())
def test_bench_train_runs_each_demo_recipe(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "train", "--method", method, "--iterations", "1", "--batch", "2", "--crop", "64",
              "--params", str(PARAMS)])
    assert exc.value.code in (0, None)
    figures = json.loads(capsys.readouterr().out)
    assert figures["method"] == method and figures["recipe"] == "demo" and figures["batch"] == 2
    assert figures["crop"] == "64x64" and figures["precision"] == "fp32"
    assert figures["s_per_iter"] > 0 and figures["img_per_s"] > 0 and figures["peak_memory_mb"] > 0
