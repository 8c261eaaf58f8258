"""AlignSeg head blocks: RRB, CAB (AlignFA), CAM (AlignCM) and the learned-offset warp they share.

Key names and math follow ``speedinghzl/AlignSeg`` HEAD (reference/alignseg.md §3). Every norm in the
head is InPlaceABN with leaky ReLU 0.01; every conv has no bias.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.models.norm import InPlaceABN


def offset_warp(src: Tensor, size: tuple[int, int], delta: Tensor, legacy_order: bool = False) -> Tensor:
    """Sample ``src`` (n,c,Hi,Wi) on a ``size`` grid shifted by learned offsets ``delta`` (n,2,h,w).

    The base grid is ``linspace(-1, 1)`` along each axis; Δ channel 0 (x) is divided by the sampled
    map's width ``Wi`` and channel 1 (y) by ``Hi`` (HEAD ``forward``), then ``grid_sample`` runs with
    ``align_corners=False`` and zero padding, so Δ is in half-pixels of ``src`` and borders are
    half-attenuated even at Δ = 0. ``legacy_order`` divides by ``(Hi, Wi)`` instead, as the initial
    release did; both agree on square maps only.
    """
    h, w = size
    hi, wi = src.shape[-2:]
    # At least float32: a bf16 grid is off by up to ~0.5 px on 200-px maps (autocast samples in fp32 too).
    dtype = torch.promote_types(src.dtype, torch.float32)
    ys = torch.linspace(-1.0, 1.0, h, dtype=dtype, device=src.device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=dtype, device=src.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack((gx, gy), dim=-1).unsqueeze(0)  # (1,h,w,2), x first as grid_sample expects
    norm_x, norm_y = (hi, wi) if legacy_order else (wi, hi)
    norm = torch.tensor([float(norm_x), float(norm_y)], dtype=dtype, device=src.device)
    grid = base + delta.permute(0, 2, 3, 1).to(dtype) / norm
    out = F.grid_sample(src.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(src.dtype)


def delta_generator(channels: int) -> nn.Sequential:
    """conv1×1 2C→C → ABN → conv3×3 C→2, the last conv zero-initialised so training starts unwarped."""
    gen = nn.Sequential(
        nn.Conv2d(2 * channels, channels, 1, bias=False),
        InPlaceABN(channels),
        nn.Conv2d(channels, 2, 3, padding=1, bias=False),
    )
    nn.init.zeros_(cast(nn.Conv2d, gen[2]).weight)
    return gen


class RRB(nn.Module):
    """Residual refinement block: ``ABN(f + conv3(ABN(conv3(f))))`` with ``f = conv1×1(x)``."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.unify = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.residual = nn.Sequential(
            nn.Conv2d(channels, channels // 4, 3, padding=1, bias=False),
            InPlaceABN(channels // 4),
            nn.Conv2d(channels // 4, channels, 3, padding=1, bias=False),
        )
        self.norm = InPlaceABN(channels)

    def forward(self, x: Tensor) -> Tensor:
        f = self.unify(x)
        return self.norm(self.residual(f).add_(f))


class CAB(nn.Module):
    """AlignFA: upsample ``high`` to ``low``, predict two offset fields, sum the two warped maps."""

    def __init__(self, channels: int, legacy_order: bool = False) -> None:
        super().__init__()
        self.legacy_order = legacy_order
        self.delta_gen1 = delta_generator(channels)
        self.delta_gen2 = delta_generator(channels)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        size = (low.shape[-2], low.shape[-1])
        high = F.interpolate(high, size=size, mode="bilinear", align_corners=True)
        cat = torch.cat((low, high), dim=1)
        warped_high = offset_warp(high, size, self.delta_gen1(cat), self.legacy_order)
        warped_low = offset_warp(low, size, self.delta_gen2(cat), self.legacy_order)
        return warped_high.add_(warped_low)


def _context_branch(features: int, channels: int, pooled: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d((3, 3))] if pooled else []
    layers += [
        nn.Conv2d(features, features, 1, bias=False),
        InPlaceABN(features),
        nn.Conv2d(features, channels, 3, padding=1, bias=False),
        InPlaceABN(channels),
    ]
    return nn.Sequential(*layers)


class CAM(nn.Module):
    """AlignCM: a 3×3 pooled context map, warped onto the stride-32 map by learned offsets and added.

    The sampled map is the 3×3 context itself, so Δ is divided by 3 (both offset orders agree).
    """

    def __init__(self, features: int, channels: int, legacy_order: bool = False) -> None:
        super().__init__()
        self.legacy_order = legacy_order
        self.pool = _context_branch(features, channels, pooled=True)
        self.adapt = _context_branch(features, channels, pooled=False)
        self.delta_gen = delta_generator(channels)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        context = self.pool(x)
        local = self.adapt(x)
        context_up = F.interpolate(context, size=size, mode="bilinear", align_corners=True)
        delta = self.delta_gen(torch.cat((local, context_up), dim=1))
        return offset_warp(context, size, delta, self.legacy_order).add_(local)
