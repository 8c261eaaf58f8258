"""GALD-Net v1 (Global Aggregation then Local Distribution, BMVC 2019), official ``lxtGH/GALD-DGCNet``.

Spec: ``reference/gald.md``. The skeleton (backbone, ``conva/convb/bottleneck`` head, ``dsn``) is shared
with DGCNet in :mod:`segrepro.models.gcn_blocks`; this module holds the GALD block and the builders.
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

# Three unpadded stride-2 3×3 convs need a map of at least 15 px (15 → 7 → 3 → 1); one needs 3.
LOCAL_MIN_SIZE = 15
DOWN_MIN_SIZE = 3


def dw_down(channels: int) -> nn.Sequential:
    """Depthwise conv3×3 stride 2, **no padding**, with bias → BN → ReLU (keys ``0``, ``1``)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride=2, groups=channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
    )


def at_least(x: Tensor, size: int) -> Tensor:
    """Resize ``x`` up (bilinear, align_corners=True) so both sides are ≥ ``size``; else unchanged.

    The official unpadded stride-2 chains crash on small maps. Their result is always resized back
    to the input's size with align_corners=True, so resizing up first keeps the geometry and is a
    no-op wherever the official code runs (stride-8 maps ≥ 15 px, i.e. inputs ≥ 111 px).
    """
    h, w = x.shape[-2:]
    if h >= size and w >= size:
        return x
    return F.interpolate(x, size=(max(h, size), max(w, size)), mode="bilinear", align_corners=True)


class SpatialCGNL(nn.Module):
    """Grouped compact generalised non-local block with the dot-product kernel and no scaling.

    Per group, the scalar ``Σ p·g`` over channels and pixels rescales ``t``; then a grouped 1×1 conv
    ``z``, GroupNorm and the residual.
    """

    def __init__(self, channels: int, inter_channels: int, groups: int = 8) -> None:
        super().__init__()
        self.groups = groups
        self.t = nn.Conv2d(channels, inter_channels, 1, bias=False)
        self.p = nn.Conv2d(channels, inter_channels, 1, bias=False)
        self.g = nn.Conv2d(channels, inter_channels, 1, bias=False)
        self.z = nn.Conv2d(inter_channels, channels, 1, groups=groups, bias=False)
        self.gn = nn.GroupNorm(groups, channels)

    def forward(self, x: Tensor) -> Tensor:
        t, p, g = self.t(x), self.p(x), self.g(x)
        n = x.shape[0]
        p, g = p.reshape(n, self.groups, 1, -1), g.reshape(n, self.groups, -1, 1)
        scale = torch.matmul(p, g)  # (n, groups, 1, 1)
        y = (scale * t.reshape(n, self.groups, 1, -1)).reshape(t.shape)
        return self.gn(self.z(y)).add_(x)


class LocalAttenModule(nn.Module):
    """Local distribution: a 3× depthwise stride-2 mask, upsampled and sigmoided; returns ``U + U·M``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dconv1 = dw_down(channels)
        self.dconv2 = dw_down(channels)
        self.dconv3 = dw_down(channels)

    def forward(self, u: Tensor) -> Tensor:
        m = self.dconv3(self.dconv2(self.dconv1(at_least(u, LOCAL_MIN_SIZE))))
        m = torch.sigmoid(F.interpolate(m, size=u.shape[-2:], mode="bilinear", align_corners=True))
        return (u * m).add_(u)


class GALDBlock(nn.Module):
    """dw-s2 ``down`` → CGNL ``long_relation`` → upsample to U → ``local_attention(U) + U`` = ``2U + U·M``.

    The block input X itself is not added back (as in the official code).
    """

    def __init__(self, channels: int, inter_channels: int, groups: int = 8) -> None:
        super().__init__()
        self.down = dw_down(channels)
        self.long_relation = SpatialCGNL(channels, inter_channels, groups)
        self.local_attention = LocalAttenModule(channels)

    def forward(self, x: Tensor) -> Tensor:
        a = self.long_relation(self.down(at_least(x, DOWN_MIN_SIZE)))
        u = F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.local_attention(u).add_(u)


class GALDNet(ContextNet):
    """GALD-Net: dilated deep-stem ResNet (stride 8) + GALD head (key ``head.a2block``) + ``dsn``.

    * Input: **BGR**, 0–255, minus (104.00699, 116.66877, 122.67891), std 1 (the scripts omit ``--rgb``).
    * Output: ``main`` logits at stride 8 (not upsampled). Train mode adds ``aux["dsn"]`` (layer3
      classifier, stride 8; loss weight 0.4); eval mode has no aux, as the official eval forward.
    * Small inputs: the official unpadded stride-2 chains crash below 111 px (stride-8 map < 15 px:
      the local mask runs on U, which is already back at X's size, so it is three convs deep, not the
      four ``gald.md`` counts). Here the chains' input is resized up instead (:func:`at_least`), so the
      ``tiny`` variant and small crops work, and every size the official code accepts gives its numbers.
    * Official bug fixed: ``train_gald_r_101_city_finetrain.sh`` initialises R101 from
      ``resnet50-deep.pth`` (layer3 blocks 6–22 silently stay random). ``build(..., pretrained=)`` loads
      through :func:`~segrepro.models.pretrained.load_backbone`, which refuses a depth mismatch.
    """

    def __init__(self, num_classes: int = 19, *, groups: int = 8, **config: Any) -> None:
        super().__init__(
            "a2block", lambda c: GALDBlock(c, c // 2, groups), num_classes=num_classes, dsn_relu=True, **config
        )


@register(
    "gald",
    "r101",
    pretrained_source=PRETRAINED_SOURCE,
    default=True,
    description="GALD-Net, deep-stem ResNet-101, output stride 8",
)
def build_gald_r101(num_classes: int) -> GALDNet:
    return build_variant(GALDNet, "r101", num_classes)


@register(
    "gald", "r50", pretrained_source=PRETRAINED_SOURCE, description="GALD-Net, deep-stem ResNet-50, output stride 8"
)
def build_gald_r50(num_classes: int) -> GALDNet:
    return build_variant(GALDNet, "r50", num_classes)


@register(
    "gald",
    "tiny",
    pretrained_source=PRETRAINED_SOURCE,
    description="GALD-Net head on a shallow, narrow ResNet (tests and smoke runs)",
)
def build_gald_tiny(num_classes: int) -> GALDNet:
    return build_variant(GALDNet, "tiny", num_classes)


# No --rgb (BGR Caffe means); 769² train crops; eval.py's default window 832 (flip requested but ignored).
register_card(
    MethodCard(
        "gald",
        "supervised",
        "caffe_bgr",
        TrainAugment((769, 769), ScaleChoices(0.7, 2.1, 0.1)),
        {"val": Protocol("official", crop=832)},
        outputs=("main", "dsn"),
        head_prefixes=("head", "dsn"),
    )
)
