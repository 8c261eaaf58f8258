"""ACFNet head blocks: ASPP, the FCN aux head and the Attentional Class Feature (ACF) module.

Sub-module indices inside each ``nn.Sequential`` (ReLU and Dropout included) reproduce the unofficial
``zrl4836/ACFNet`` key names (``aspp.b4.gap.1``, ``auxlayer.conv5.4``, ``acfhead.acf.conv1.0`` ...), so a
checkpoint of that code loads strictly. Every norm here is InPlaceABN with the identity activation
followed by a separate ``nn.ReLU``, as in that code (reference/acfnet.md §1, §3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.models.norm import InPlaceABN


def abn(channels: int) -> InPlaceABN:
    """The repo's ``BatchNorm2d``: InPlaceABN with no fused activation (a ReLU module follows)."""
    return InPlaceABN(channels, activation="identity")


def conv_abn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel // 2)
    return [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False), abn(cout), nn.ReLU(inplace=True)]


class ASPPPooling(nn.Module):
    """Image-level branch: global average → 1×1 conv → ABN-ReLU, broadcast back (align_corners=True)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_abn_relu(cin, cout))

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(self.gap(x), size=x.shape[2:], mode="bilinear", align_corners=True)


class ASPP(nn.Module):
    """Five parallel branches concatenated with no projection: ``5 · out_channels`` outputs."""

    def __init__(self, cin: int, out_channels: int, rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__()
        r1, r2, r3 = rates
        self.b0 = nn.Sequential(*conv_abn_relu(cin, out_channels))
        self.b1 = nn.Sequential(*conv_abn_relu(cin, out_channels, 3, r1))
        self.b2 = nn.Sequential(*conv_abn_relu(cin, out_channels, 3, r2))
        self.b3 = nn.Sequential(*conv_abn_relu(cin, out_channels, 3, r3))
        self.b4 = ASPPPooling(cin, out_channels)
        self.out_channels = 5 * out_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class FCNHead(nn.Module):
    """Aux head on layer3: 3×3 conv → ABN-ReLU → Dropout2d(0.1) → 1×1 classifier (key ``conv5``)."""

    def __init__(self, cin: int, num_classes: int, mid: int | None = None) -> None:
        super().__init__()
        mid = mid or cin // 4
        self.conv5 = nn.Sequential(*conv_abn_relu(cin, mid, 3), nn.Dropout2d(0.1), nn.Conv2d(mid, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv5(x)


def class_channel_attention(coarse: Tensor, feats: Tensor) -> Tensor:
    """ACF attention (B, N classes, C' channels): softmax over channels of ``max_C'(E) − E``, E = P·F'.

    This is the code's DANet-style "max minus energy" trick on **raw** coarse logits P, not the paper's
    normalised class centres; changing it moves the official outputs by 7 % (reference/acfnet.md §3).
    """
    b, n = coarse.shape[:2]
    energy = torch.bmm(coarse.reshape(b, n, -1), feats.flatten(2).transpose(1, 2))  # (B, N, C')
    energy = energy.max(dim=-1, keepdim=True).values - energy
    return energy.softmax(dim=-1)


class ACF(nn.Module):
    """Attentional class feature: F' = conv1(x); A = attention(P, F'); conv2(Aᵀ · P)."""

    def __init__(self, cin: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*conv_abn_relu(cin, channels), nn.Dropout2d(0.2))
        self.conv2 = nn.Conv2d(channels, channels, 1)
        # The official training init (kaiming a=1, zero bias) reaches only conv2, a direct Conv2d child.
        nn.init.kaiming_normal_(self.conv2.weight, a=1)
        if self.conv2.bias is not None:
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, coarse: Tensor) -> Tensor:
        feats = self.conv1(x)
        attention = class_channel_attention(coarse, feats)  # (B, N, C')
        b, n, h, w = coarse.shape
        out = torch.bmm(attention.transpose(1, 2), coarse.reshape(b, n, h * w))  # (B, C', HW)
        return self.conv2(out.reshape(b, -1, h, w))


class ACFHead(nn.Module):
    """Thin wrapper that only exists for the official key prefix ``acfhead.acf``."""

    def __init__(self, cin: int, channels: int) -> None:
        super().__init__()
        self.acf = ACF(cin, channels)

    def forward(self, x: Tensor, coarse: Tensor) -> Tensor:
        return self.acf(x, coarse)
