"""Inference protocols: tile grid, sliding fusion, flip and multi-scale against hand-computed and direct references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segrepro.errors import UserError
from segrepro.evaluation.inference import (
    predict_logits,
    predict_probs,
    resolve_protocol,
    tile_starts,
)
from segrepro.models import SegOutput, get_card
from segrepro.models.outputs import Outputs


def _official(method: str) -> dict:
    return dict(get_card(method).eval_protocols)


class ColumnNet(nn.Module):
    """Logits [local column index, 0]: the output depends on where the tile sits, so fusion is visible."""

    def forward(self, x: torch.Tensor, outputs: Outputs = None) -> SegOutput:
        n, _, h, w = x.shape
        col = torch.arange(w, dtype=torch.float32).expand(n, 1, h, w)
        return SegOutput(torch.cat([col, torch.zeros_like(col)], 1), 1)


class StridedNet(nn.Module):
    """A fixed random conv net with stride 2 (like a real head at a lower resolution)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, outputs: Outputs = None) -> SegOutput:
        return SegOutput(self.conv(x), 2)


def test_tile_grid_matches_the_specs() -> None:
    assert tile_starts(1024, 872, 582) == [0, 152]  # AlignSeg: 2 rows
    assert tile_starts(2048, 872, 582) == [0, 582, 1164, 1176]  # 4 columns, the last flush with the border
    assert tile_starts(1280, 864, 576) == [0, 416]  # ANN at scale 1.25
    assert tile_starts(864, 864, 576) == [0]


def test_sliding_fusion_averages_raw_tile_logits_by_hand() -> None:
    image = torch.zeros(3, 4, 10)
    fused = predict_logits(ColumnNet(), image, crop=4, stride=3)[0, 0, 0]
    # tiles start at 0, 3, 6; pixel X gets the mean of X - start over the tiles covering it
    starts = [0, 3, 6]
    expected = [sum(x - s for s in starts if s <= x < s + 4) / sum(s <= x < s + 4 for s in starts) for x in range(10)]
    assert fused.tolist() == pytest.approx(expected)


def test_flip_view_is_flipped_back() -> None:
    logits = predict_logits(ColumnNet(), torch.zeros(3, 2, 6), crop=None, stride=None, flip=True)
    assert logits[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert logits[1, 0, 0].tolist() == [5, 4, 3, 2, 1, 0]


def test_softmax_average_of_flip_by_hand() -> None:
    probs = predict_probs(ColumnNet(), torch.zeros(3, 2, 4), resolve_protocol(_official("ann"), "ss", flip=True))
    col = torch.arange(4.0)
    expected = (torch.sigmoid(col) + torch.sigmoid(3 - col)) / 2  # softmax([a, 0])[0] = sigmoid(a)
    assert torch.allclose(probs[0, 0], expected)


def _reference(model: nn.Module, image: torch.Tensor, scales, flip: bool, crop: int | None, stride: int) -> torch.Tensor:
    """One tile at a time, no batching: the protocol written out directly."""
    h, w = image.shape[-2:]
    total = torch.zeros(5, h, w)
    for s in scales:
        x = F.interpolate(image[None], size=(int(h * s), int(w * s)), mode="bilinear", align_corners=True)
        for f in ([False, True] if flip else [False]):
            xv = x.flip(-1) if f else x
            sh, sw = xv.shape[-2:]
            if crop is None or sh < crop or sw < crop:
                logits = F.interpolate(model(xv).main, size=(sh, sw), mode="bilinear", align_corners=True)[0]
            else:
                logits, count = torch.zeros(5, sh, sw), torch.zeros(sh, sw)
                for y in tile_starts(sh, crop, stride):
                    for xx in tile_starts(sw, crop, stride):
                        tile = model(xv[..., y:y + crop, xx:xx + crop]).main
                        logits[:, y:y + crop, xx:xx + crop] += F.interpolate(
                            tile, size=(crop, crop), mode="bilinear", align_corners=True)[0]
                        count[y:y + crop, xx:xx + crop] += 1
                logits = logits / count
            if f:
                logits = logits.flip(-1)
            logits = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=True)[0]
            total += logits.softmax(0)
    return total / (len(scales) * (2 if flip else 1))


@pytest.mark.parametrize("crop", [None, 12])
def test_multiscale_flip_sliding_matches_direct_reference(crop: int | None) -> None:
    model = StridedNet().eval()
    image = torch.randn(3, 20, 30, generator=torch.Generator().manual_seed(1))
    proto = resolve_protocol(_official("alignseg"), "ms-flip", crop=crop or 0, stride=7)
    with torch.no_grad():
        ours = predict_probs(model, image, proto, tile_batch=3)
        ref = _reference(model, image, proto.scales, True, crop, 7)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(ours.sum(0), torch.ones(20, 30), atol=1e-5)


def test_tile_batch_does_not_change_the_result_and_small_images_go_whole() -> None:
    model = StridedNet().eval()
    image = torch.randn(3, 16, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = predict_logits(model, image, 10, 6, flip=True, tile_batch=1)
        b = predict_logits(model, image, 10, 6, flip=True, tile_batch=64)
        big = predict_logits(model, image, 64, None)  # crop larger than the image: whole image
        whole = predict_logits(model, image, None, None)
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(big, whole)


def test_protocol_table_and_overrides() -> None:
    alignseg = resolve_protocol(_official("alignseg"))
    assert (alignseg.crop, alignseg.tile_stride, alignseg.scales, alignseg.flip) == (872, 582, (1.0,), False)
    assert resolve_protocol(_official("gald")).tile_stride == 555
    assert resolve_protocol(_official("acfnet")).tile_stride == 513
    assert resolve_protocol(_official("ann"), split="val").crop is None
    ann_test = resolve_protocol(_official("ann"), split="test")
    assert (ann_test.scales, ann_test.flip, ann_test.crop, ann_test.tile_stride) == ((0.75, 1.0, 1.25), True, 864, 576)
    ms = resolve_protocol(_official("dgcnet"), "ms-flip")
    assert ms.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and ms.flip and ms.crop == 832
    assert resolve_protocol(_official("gald"), "ss").crop is None
    assert resolve_protocol(_official("alignseg"), crop=0).crop is None
    assert resolve_protocol(_official("alignseg"), scales=[1, 2], flip=True).scales == (1.0, 2.0)
    with pytest.raises(UserError, match="unknown protocol"):
        resolve_protocol(_official("alignseg"), "fancy")
    with pytest.raises(UserError, match="scales"):
        resolve_protocol(_official("alignseg"), scales=[0])


def test_resize_first_then_scales_and_back_to_the_label_size() -> None:
    """``resize`` (short side, long cap): the scales run on the resized image and the fused probabilities go
    back to the input size (the label's), i.e. the reference protocol on the resized image, resized back."""
    from segrepro.models.card import Protocol

    model = StridedNet().eval()
    image = torch.randn(3, 10, 30, generator=torch.Generator().manual_seed(3))
    assert Protocol("official", resize=(16, 40)).base_size(10, 30) == (13, 40)  # long side caps: 40/30
    assert Protocol("official", resize=(16, 64)).base_size(10, 30) == (16, 48)  # short side 16
    proto = Protocol("official", (0.75, 1.0), True, None, None, (16, 64))
    with torch.no_grad():
        ours = predict_probs(model, image, proto)
        base = F.interpolate(image[None], size=(16, 48), mode="bilinear", align_corners=True)[0]
        ref = F.interpolate(_reference(model, base, proto.scales, True, None, 1)[None], size=(10, 30),
                            mode="bilinear", align_corners=True)[0]
    assert ours.shape == (5, 10, 30) and torch.allclose(ours, ref, atol=1e-5)
    assert "short side 16 (long ≤ 64)" in proto.describe()


def test_recipe_eval_resize_reaches_the_protocol() -> None:
    from segrepro.engine.config import load_params, resolve_recipe

    from pathlib import Path

    cfg = resolve_recipe(load_params(Path(__file__).resolve().parents[1] / "params.yaml"), "ann", "official_ade20k")
    assert resolve_protocol(cfg.official_protocols(), split="val").resize == (520, 1040)
