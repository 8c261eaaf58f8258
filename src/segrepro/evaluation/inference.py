"""Test-time inference protocols: whole image or sliding window, at several scales, with optional flip.

Fusion rules (what the official code does, reference specs):
* **Tiles** (within one scale and one flip): each tile's ``main`` logits are upsampled bilinearly
  (align_corners=True) to the tile size, raw logits are **summed and divided by the per-pixel tile
  count** (AlignSeg/ACFNet/GALD/DGCNet ``predict_sliding``, ANN ``mscrop``). The grid: stride between
  tiles, the last row/column shifted back to end flush with the border (``y1 = max(y2 - crop, 0)``).
* **Images smaller than a tile** in either side are predicted whole (ANN's rule; AlignSeg/GALD would
  zero-pad to the tile instead, which only differs below their crop size, never at scale 1 on 1024×2048).
* **Scales and flips**: the image is resized bilinearly (align_corners=True) to ``int(h·s) × int(w·s)``;
  each (scale, flip) logit map is resized back to the input size, softmaxed, and the probabilities are
  **averaged** (ANN sums cubic-resized logits; softmax averaging is the common rule across methods).
* **Resize first** (``Protocol.resize``, ANN ADE20K / Context): the scales are relative to the image brought
  to the short side (long side capped); the fused probabilities go back (bilinear) to the input size, so the
  class map always matches the label the metrics compare it with.
Memory: tiles run in chunks of ``tile_batch``; one logit accumulator at the current scale and one
probability accumulator at the input size live on the device, and nothing goes back to the host.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.errors import UserError
from segrepro.models.card import Protocol, third_overlap_stride
from segrepro.models.outputs import main_logits

MS_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def resolve_protocol(
    official: Mapping[str, Protocol],
    name: str = "official",
    split: str = "val",
    *,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    crop: int | None = None,
    stride: int | None = None,
) -> Protocol:
    """``official`` (the run's protocol for ``split``: its method card's, or its recipe's ``eval``) | ``ss``
    (whole image, one scale) | ``ms-flip`` (0.5–1.75 + flip, the official test window); explicit
    ``scales``/``flip``/``crop`` (0 = whole image)/``stride`` override. ``official`` maps split → protocol,
    "val" being the fallback."""

    def table(which: str) -> Protocol:
        return official.get(which, official["val"])

    if name == "official":
        proto = table(split)
    elif name == "ss":
        proto = Protocol("ss")
    elif name == "ms-flip":
        window = table("test")
        proto = Protocol("ms-flip", MS_SCALES, True, window.crop, window.stride)
    else:
        raise UserError(f"unknown protocol {name!r}; choose one of: official, ss, ms-flip")
    if scales is not None:
        if not scales or any(s <= 0 for s in scales):
            raise UserError(f"--scales {list(scales)}: give positive scales, e.g. 0.75,1,1.25")
        proto = replace(proto, scales=tuple(float(s) for s in scales))
    if flip is not None:
        proto = replace(proto, flip=flip)
    if crop is not None:
        proto = replace(proto, crop=crop or None, stride=None if not crop else proto.stride)
    if stride is not None:
        if stride <= 0:
            raise UserError(f"--stride {stride}: must be positive")
        proto = replace(proto, stride=stride)
    return proto


def tile_starts(size: int, crop: int, stride: int) -> list[int]:
    """Tile offsets along one side: every ``stride``, the last one flush with the border."""
    n = max(math.ceil((size - crop) / stride), 0) + 1
    return sorted({min(i * stride, size - crop) for i in range(n)})


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _chunks(items: Any, size: int) -> Iterator[Any]:  # a list of jobs or a batch tensor
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _forward(model: nn.Module, batch: Tensor, size: tuple[int, int]) -> Tensor:
    """``main`` logits of a batch (aux heads not run), float32, upsampled to ``size`` (bilinear, align_corners=True)."""
    with _autocast(batch.device):
        logits = main_logits(model, batch)
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
    return logits


def predict_logits(
    model: nn.Module, image: Tensor, crop: int | None, stride: int | None, flip: bool = False, tile_batch: int = 4
) -> Tensor:
    """Fused logits ``(V, C, H, W)`` of one normalised image ``(1 or 3, H, W)`` at its own size.

    ``V`` is 2 with ``flip`` (the second view already flipped back), else 1. Tiles of both views go through
    the model together, ``tile_batch`` at a time.
    """
    x = image.unsqueeze(0) if image.dim() == 3 else image
    views = torch.cat([x, x.flip(-1)]) if flip else x
    h, w = x.shape[-2:]
    out: Tensor | None = None
    if crop is None or h < crop or w < crop:
        out = torch.cat([_forward(model, v, (h, w)) for v in _chunks(views, tile_batch)])
    else:
        stride = stride or third_overlap_stride(crop)
        boxes = [(y, xx) for y in tile_starts(h, crop, stride) for xx in tile_starts(w, crop, stride)]
        jobs = [(v, y, xx) for v in range(views.shape[0]) for y, xx in boxes]
        count = torch.zeros(1, 1, h, w, device=x.device)
        for y, xx in boxes:
            count[..., y : y + crop, xx : xx + crop] += 1
        for chunk in _chunks(jobs, tile_batch):
            tiles = torch.stack([views[v, :, y : y + crop, xx : xx + crop] for v, y, xx in chunk])
            logits = _forward(model, tiles, (crop, crop))
            if out is None:
                out = torch.zeros(views.shape[0], logits.shape[1], h, w, device=x.device)
            for (v, y, xx), tile in zip(chunk, logits, strict=True):
                out[v, :, y : y + crop, xx : xx + crop] += tile
        assert out is not None  # at least one tile
        out = out / count
    if flip:
        out[1:] = out[1:].flip(-1)
    return out


@torch.no_grad()
def predict_probs(model: nn.Module, image: Tensor, protocol: Protocol, tile_batch: int = 4) -> Tensor:
    """Class probabilities ``(C, H, W)`` of one normalised image, averaged over scales and flips."""
    size = tuple(image.shape[-2:])
    base = image.unsqueeze(0)
    if protocol.base_size(*size) != size:
        base = F.interpolate(base, size=protocol.base_size(*size), mode="bilinear", align_corners=True)
    h, w = base.shape[-2:]
    acc: Tensor | None = None
    n = 0
    for s in protocol.scales:
        x = base
        if s != 1.0:
            x = F.interpolate(x, size=(int(h * s), int(w * s)), mode="bilinear", align_corners=True)
        logits = predict_logits(model, x[0], protocol.crop, protocol.tile_stride, protocol.flip, tile_batch)
        if tuple(logits.shape[-2:]) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=True)
        probs = logits.softmax(1).sum(0)
        acc = probs if acc is None else acc.add_(probs)
        n += logits.shape[0]
    assert acc is not None
    acc = acc.div_(n)
    if (h, w) != size:
        acc = F.interpolate(acc[None], size=size, mode="bilinear", align_corners=True)[0]
    return acc


def predict_classes(model: nn.Module, image: Tensor, protocol: Protocol, tile_batch: int = 4) -> Tensor:
    """Argmax class map ``(H, W)`` (int64, on the image's device)."""
    return predict_probs(model, image, protocol, tile_batch).argmax(0)
