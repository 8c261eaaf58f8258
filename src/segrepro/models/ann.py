"""ANN (Asymmetric Non-local Neural Networks, ICCV 2019), as in the official ``MendelXu/ANN``.

Key for key with the official model (``backbone.``-nested deep-stem ResNet, ``fusion``, ``context``,
``cls``, ``dsn``), so the released checkpoints load strictly (reference/ann.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from segrepro.data.transforms import ScaleRange, TrainAugment
from segrepro.models.ann_blocks import AFNB, APNB, PSP_SIZES, bn_relu
from segrepro.models.backbones.resnet import DEPTHS, ResNet
from segrepro.models.card import MethodCard, Protocol
from segrepro.models.outputs import Outputs, SegOutput, wants
from segrepro.models.registry import register, register_card

# ``build(..., pretrained=)`` file layout: the MIT/CSAIL deep-stem ResNet the official code calls
# 3x3resnet101-imagenet.pth (its split stem is renamed to ANN's ``prefix.`` keys on load).
PRETRAINED_SOURCE = "mit"


class ANN(nn.Module):
    """Dilated ResNet ("prefix" stem, PSP half-dilation rule, OS 8) + AFNB(layer3, layer4) + APNB.

    Input: BGR, 0–255, minus (102.9801, 115.9465, 122.7717), std 1 (reference/ann.md §6).

    Output (:class:`SegOutput`, identical in train and eval mode): ``main`` = class logits, ``aux["dsn"]``
    = the layer3 aux head's logits (not computed when ``outputs`` leaves it out), **both already bilinearly
    upsampled (align_corners=True) to the input size, so stride 1**, as the official model returns them. The
    official ``(aux, main)`` tuple, aux first, is adapted in :meth:`forward` only.

    APNB's query projection is its key projection (one module under two names, as officially): a
    released checkpoint carries both ``f_key.*`` and ``f_query.*`` with equal values, and loading fills
    the single shared tensor.
    """

    def __init__(
        self,
        num_classes: int = 19,
        *,
        layers: Sequence[int] = DEPTHS[101],
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_widths: Sequence[int] = (64, 64, 128),
        key_channels: int = 256,
        value_channels: int = 256,
        context_channels: int = 512,
        dsn_channels: int = 512,
        psp_sizes: Sequence[int] = PSP_SIZES,
    ) -> None:
        super().__init__()
        self.backbone = ResNet(
            layers, stem="prefix", dilation="psp", norm=nn.BatchNorm2d, widths=widths, stem_widths=stem_widths
        )
        c3, c4 = self.backbone.out_channels[2], self.backbone.out_channels[3]
        self.fusion = AFNB(c3, c4, key_channels, value_channels, psp_sizes=psp_sizes)
        self.context = nn.Sequential(
            nn.Conv2d(c4, context_channels, 3, padding=1),
            bn_relu(context_channels),
            APNB(context_channels, key_channels, value_channels, psp_sizes=psp_sizes),
        )
        self.cls = nn.Conv2d(context_channels, num_classes, 1)
        self.dsn = nn.Sequential(
            nn.Conv2d(c3, dsn_channels, 3, padding=1),
            bn_relu(dsn_channels),
            nn.Dropout2d(0.05),
            nn.Conv2d(dsn_channels, num_classes, 1),
        )

    def forward(self, x: Tensor, outputs: Outputs = None) -> SegOutput:
        _, _, c3, c4 = self.backbone.forward_stages(x)
        aux = self.dsn(c3) if wants(outputs, "dsn") else None  # first, as officially (train-mode dropout order)
        main = self.cls(self.context(self.fusion(c3, c4)))
        size = x.shape[2:]
        # The one place the official (aux, main) tuple, both upsampled to the input, is adapted.
        main = F.interpolate(main, size=size, mode="bilinear", align_corners=True)
        if aux is None:
            return SegOutput(main, 1)
        aux = F.interpolate(aux, size=size, mode="bilinear", align_corners=True)
        return SegOutput(main, 1, {"dsn": aux}, {"dsn": 1})


@register(
    "ann",
    "r101",
    pretrained_source=PRETRAINED_SOURCE,
    default=True,
    description="ResNet-101 (deep stem, OS 8, PSP dilation) + AFNB + APNB, official",
)
def build_ann_r101(num_classes: int) -> ANN:
    return ANN(num_classes)


@register(
    "ann",
    "tiny",
    pretrained_source=PRETRAINED_SOURCE,
    description="ANN head on a 1-1-1-1 narrow ResNet, for CPU tests and demos",
)
def build_ann_tiny(num_classes: int) -> ANN:
    return ANN(
        num_classes,
        layers=(1, 1, 1, 1),
        widths=(8, 16, 32, 64),
        stem_widths=(8, 8, 16),
        key_channels=16,
        value_channels=16,
        context_channels=32,
        dsn_channels=32,
    )


# torchcv: BGR means, std 1; resize s ~ U(0.5, 2), aspect ~ U(0.9, 1.1), 769² crop, brightness ±10, flip;
# val whole image, test sliding 864 (stride 576) at scales 0.75/1/1.25 with flip: the only split-specific protocol.
register_card(
    MethodCard(
        "ann",
        "supervised",
        "ann_bgr",
        TrainAugment((769, 769), ScaleRange((0.5, 2.0), (0.9, 1.1)), brightness=10),
        {"val": Protocol("official"), "test": Protocol("official", (0.75, 1.0, 1.25), True, 864, int(864 * 0.667))},
        outputs=("main", "dsn"),
        head_prefixes=("fusion", "context", "cls", "dsn"),
    )
)
