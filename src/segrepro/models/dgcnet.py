"""DGCNet / "DualSeg" (Dual Graph Convolutional Network, BMVC 2019), official ``lxtGH/GALD-DGCNet``.

Spec: ``reference/dgcnet.md``. The skeleton (backbone, ``conva/convb/bottleneck`` head, ``dsn``) is
shared with GALD-Net in :mod:`segrepro.models.gcn_blocks`; this module holds the DualGCN block.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.data.transforms import ScaleChoices, TrainAugment
from segrepro.models.card import MethodCard, Protocol
from segrepro.models.gcn_blocks import PRETRAINED_SOURCE, ContextNet, build_variant
from segrepro.models.registry import register, register_card


class SpatialGCN(nn.Module):
    """Coordinate-space GCN: pixel nodes, a (C'×C') channel affinity from Q·Vᵀ, applied to K.

    Output ``relu(BN(out(BN1d(conv_wg(R)))) + x)`` with ``R = K·softmax(Q·Vᵀ)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inter = channels // 2
        self.node_k = nn.Conv2d(channels, inter, 1)
        self.node_v = nn.Conv2d(channels, inter, 1)
        self.node_q = nn.Conv2d(channels, inter, 1)
        self.conv_wg = nn.Conv1d(inter, inter, 1, bias=False)
        self.bn_wg = nn.BatchNorm1d(inter)
        self.out = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        k, v, q = (node(x).flatten(2) for node in (self.node_k, self.node_v, self.node_q))  # (n, c', hw)
        affinity = torch.softmax(torch.bmm(q, v.transpose(1, 2)), dim=-1)  # (n, c', c')
        r = torch.bmm(k.transpose(1, 2), affinity).transpose(1, 2)  # (n, c', hw)
        r = self.bn_wg(self.conv_wg(r)).reshape(k.shape[0], -1, *x.shape[-2:])
        return F.relu(self.out(r).add_(x), inplace=True)


def dw_s2(channels: int) -> list[nn.Module]:
    """Depthwise conv3×3 stride 2, padding 1, no bias → BN (no ReLU)."""
    conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False)
    return [conv, nn.BatchNorm2d(channels)]


class DualGCN(nn.Module):
    """Coordinate-space GCN on a 3× depthwise-downsampled map + feature-space (GloRe) GCN, fused by ``final``.

    Feature space: pixels are projected onto ``channels // ratio`` nodes by ``Bm = BN(theta(X))`` with an
    **unnormalised** sum over all pixels (``Z0 = Φ·Bmᵀ``); the node graph adds the identity term
    (``Z = A(Z0) + Z0``), then the state update ``conv_wg`` and the re-projection ``Z·Bm``.
    """

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        nodes, feats = channels // ratio, channels // ratio * 2
        self.phi = nn.Conv2d(channels, feats, 1, bias=False)
        self.bn_phi = nn.BatchNorm2d(feats)
        self.theta = nn.Conv2d(channels, nodes, 1, bias=False)
        self.bn_theta = nn.BatchNorm2d(nodes)
        self.conv_adj = nn.Conv1d(nodes, nodes, 1, bias=False)
        self.bn_adj = nn.BatchNorm1d(nodes)
        self.conv_wg = nn.Conv1d(feats, feats, 1, bias=False)
        self.bn_wg = nn.BatchNorm1d(feats)
        self.conv3 = nn.Conv2d(feats, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.local = nn.Sequential(*dw_s2(channels), *dw_s2(channels), *dw_s2(channels))
        self.gcn_local_attention = SpatialGCN(channels)
        self.final = nn.Sequential(nn.Conv2d(channels * 2, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        g_loc = self.gcn_local_attention(self.local(x))
        g_loc = F.interpolate(g_loc, size=x.shape[-2:], mode="bilinear", align_corners=True)
        spatial_local = (x * g_loc).add_(x)

        phi = self.bn_phi(self.phi(x)).flatten(2)  # (n, feats, hw)
        proj = self.bn_theta(self.theta(x)).flatten(2)  # (n, nodes, hw)
        z0 = torch.matmul(phi, proj.transpose(1, 2))  # (n, feats, nodes)
        z = self.bn_adj(self.conv_adj(z0.transpose(1, 2))).transpose(1, 2) + z0
        z = self.bn_wg(self.conv_wg(z))
        y = torch.matmul(z, proj).reshape(x.shape[0], -1, *x.shape[-2:])
        g_out = F.relu(self.bn3(self.conv3(y)).add_(x), inplace=True)

        return self.final(torch.cat([spatial_local, g_out], dim=1))


class DGCNet(ContextNet):
    """DGCNet: dilated deep-stem ResNet (stride 8) + DualGCN head (key ``head.dualgcn``) + ``dsn``.

    * Input: **RGB**, /255, minus ImageNet mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)
      (the scripts pass ``--rgb 1``, unlike GALD).
    * Output: ``main`` logits at stride 8 (not upsampled). Train mode adds ``aux["dsn"]`` (layer3
      classifier without ReLU, stride 8; loss weight 0.4); eval mode has no aux, as the official eval.
    * Every input size works (all convs are padded).
    """

    def __init__(self, num_classes: int = 19, *, ratio: int = 4, **config: Any) -> None:
        super().__init__("dualgcn", lambda c: DualGCN(c, ratio), num_classes=num_classes, dsn_relu=False, **config)


@register(
    "dgcnet",
    "r101",
    pretrained_source=PRETRAINED_SOURCE,
    default=True,
    description="DGCNet (DualGCN), deep-stem ResNet-101, output stride 8",
)
def build_dgcnet_r101(num_classes: int) -> DGCNet:
    return build_variant(DGCNet, "r101", num_classes)


@register(
    "dgcnet",
    "r50",
    pretrained_source=PRETRAINED_SOURCE,
    description="DGCNet (DualGCN), deep-stem ResNet-50, output stride 8",
)
def build_dgcnet_r50(num_classes: int) -> DGCNet:
    return build_variant(DGCNet, "r50", num_classes)


@register(
    "dgcnet",
    "tiny",
    pretrained_source=PRETRAINED_SOURCE,
    description="DGCNet head on a shallow, narrow ResNet (tests and smoke runs)",
)
def build_dgcnet_tiny(num_classes: int) -> DGCNet:
    return build_variant(DGCNet, "tiny", num_classes)


# --rgb 1: RGB ImageNet mean/std; 832² crops; val sliding 832.
register_card(
    MethodCard(
        "dgcnet",
        "supervised",
        "imagenet_rgb",
        TrainAugment((832, 832), ScaleChoices(0.7, 2.1, 0.1)),
        {"val": Protocol("official", crop=832)},
        outputs=("main", "dsn"),
        head_prefixes=("head", "dsn"),
    )
)
