"""AlignSeg's learned-offset figure: the forward-hook record changes nothing, and the command writes a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segrepro.cli import main
from segrepro.models import build
from segrepro.models.alignseg import ALIGNFA_MODULES, record_offsets
from segrepro.stages import resolved_config

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _tiny_alignseg() -> torch.nn.Module:
    """Tiny AlignSeg whose zero-initialised offset convs are given small random weights (non-zero Δ)."""
    torch.manual_seed(0)
    model = build("alignseg", variant="tiny", num_classes=19).eval()
    for name in ALIGNFA_MODULES:
        for gen in (getattr(model, name).delta_gen1, getattr(model, name).delta_gen2):
            torch.nn.init.normal_(gen[2].weight, std=0.05)
    return model


def test_record_offsets_leaves_the_model_unchanged() -> None:
    model = _tiny_alignseg()
    x = torch.randn(1, 3, 64, 96)
    keys = list(model.state_dict())
    with torch.no_grad():
        plain = model(x).main
        with record_offsets(model) as record:
            recorded = model(x).main
    assert torch.equal(plain, recorded) and list(model.state_dict()) == keys
    assert all(not gen._forward_hooks for m in ALIGNFA_MODULES  # the hooks are gone after the block
               for gen in (getattr(model, m).delta_gen1, getattr(model, m).delta_gen2))
    assert list(record) == list(ALIGNFA_MODULES)
    for fields in record.values():
        assert set(fields) == {"A", "F"} and fields["A"].shape == (1, 2, *plain.shape[-2:])  # stride 4
        assert fields["A"].abs().max() > 0


def test_visualize_offsets_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _, cfg = resolved_config("alignseg", "demo", (), PARAMS)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.record()))
    torch.save(_tiny_alignseg().state_dict(), run / "model.pt")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(rng.integers(0, 19, (64, 96), dtype=np.uint8)).save(tmp_path / "a_gt.png")
    out = tmp_path / "fig.png"
    try:
        main(["visualize", "offsets", "--checkpoint", str(run / "model.pt"), "--image", str(tmp_path / "a.jpg"),
              "--gt", str(tmp_path / "a_gt.png"), "--out", str(out), "--device", "cpu"])
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 4 * im.size[1] / 2  # 5 columns × 2 rows
