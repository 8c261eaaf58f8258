"""ACFNet (Attentional Class Feature Network, ICCV 2019), as in the only public code ``zrl4836/ACFNet``.

The paper's authors released no code; this reproduces the unofficial repository key for key and number
for number (reference/acfnet.md), including where it departs from the paper (ACF softmax over max−E on
raw logits, 3×3 fine head).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from segrepro.data.transforms import ScaleChoices, TrainAugment
from segrepro.models.acfnet_blocks import ASPP, ACFHead, FCNHead, abn, conv_abn_relu
from segrepro.models.backbones.resnet import DEPTHS, ResNet
from segrepro.models.card import MethodCard, Protocol
from segrepro.models.norm import InPlaceABN
from segrepro.models.outputs import Outputs, SegOutput, wants
from segrepro.models.registry import register, register_card

STRIDE = 8
# ``build(..., pretrained=)`` file layout: a deep-stem ECA-ResNet with every eca.conv (the official
# recipe's MIT file has none, so its ECA convs stay random; see segrepro.models.pretrained).
PRETRAINED_SOURCE = "eca"


class ACFNet(ResNet):
    """ECA-ResNet (deep "split" stem, full dilation, output stride 8) + ASPP + coarse head + ACF + fine head.

    The backbone is the model itself (top-level keys ``conv1 ... layer4``) with InPlaceABN(identity)+ReLU
    norms and ECA (k=3) in every block; the heads follow in the official state_dict order.

    Input: BGR, 0–255, minus the Caffe mean (104.008, 116.669, 122.675), no std (reference/acfnet.md §6).

    Output (:class:`SegOutput`, identical in train and eval mode, everything at stride 8, not upsampled):

    * ``main`` = ``fine + coarse``, the fusion the official sliding-window evaluation averages.
    * ``aux["fine"]`` = the fine head's logits (official ``outs[0]``, the OHEM-CE term, weight 0.7),
      ``aux["coarse"]`` = the coarse head's logits (``outs[1]``, CE 0.6, also the ACF's class input),
      ``aux["fcn"]`` = the layer3 FCN aux logits (``outs[2]``, CE 0.4). Those ``outputs`` leaves out are
      not returned (and without ``fcn`` the FCN head does not run).

    Official bug fixed, not copied: the training loss crashes because its Lovász term is computed on the
    **stride-8** ``pre_out + coarse_x`` against full-resolution labels (``IndexError`` in
    ``flatten_probas``), so the published code cannot train. Here every output carries its stride
    (``stride``/``aux_strides``), and the engine upsamples logits to the label size (bilinear,
    align_corners=True, as the official CE terms do) before every loss term, Lovász on ``main`` included.
    """

    def __init__(
        self,
        num_classes: int = 19,
        *,
        layers: Sequence[int] = DEPTHS[101],
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_widths: Sequence[int] = (64, 64, 128),
        aspp_channels: int | None = None,
        aspp_rates: Sequence[int] = (12, 24, 36),
        coarse_channels: int = 512,
        acf_channels: int = 512,
        fine_channels: int = 1024,
    ) -> None:
        super().__init__(
            layers,
            stem="split",
            dilation="full",
            norm=partial(InPlaceABN, activation="identity"),
            eca_kernel=3,
            widths=widths,
            stem_widths=stem_widths,
        )
        c3, c4 = self.out_channels[2], self.out_channels[3]
        self.aspp = ASPP(c4, aspp_channels or c4 // 4, aspp_rates)
        feat = self.aspp.out_channels
        self.auxlayer = FCNHead(c3, num_classes)
        self.dsn = nn.Sequential(
            *conv_abn_relu(feat, coarse_channels),
            nn.Dropout2d(0.5),
            nn.Conv2d(coarse_channels, coarse_channels, 3, padding=1),
            abn(coarse_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
            nn.Conv2d(coarse_channels, num_classes, 1),
        )
        self.acfhead = ACFHead(feat, acf_channels)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(acf_channels + feat, fine_channels, 3, padding=1, bias=False),
            InPlaceABN(fine_channels),  # the only leaky-ReLU (0.01) norm of the model
            nn.Dropout2d(0.1),
            nn.Conv2d(fine_channels, num_classes, 1),
        )

    def forward(self, x: Tensor, outputs: Outputs = None) -> SegOutput:  # type: ignore[override]
        _, _, c3, c4 = self.forward_stages(x)
        feat = self.aspp(c4)
        aux = self.auxlayer(c3) if wants(outputs, "fcn") else None
        coarse = self.dsn(feat)
        fine = self.bottleneck(torch.cat([self.acfhead(feat, coarse), feat], dim=1))
        # The one place the official [pre_out, coarse_x, auxout] list is adapted.
        outs = {k: v for k, v in {"fine": fine, "coarse": coarse, "fcn": aux}.items() if wants(outputs, k)}
        return SegOutput(fine + coarse, STRIDE, outs, {k: STRIDE for k in outs})


@register(
    "acfnet",
    "r101",
    pretrained_source=PRETRAINED_SOURCE,
    default=True,
    description="ECA-ResNet-101 (deep stem, OS 8) + ASPP + ACF, official",
)
def build_acfnet_r101(num_classes: int) -> ACFNet:
    return ACFNet(num_classes)


@register(
    "acfnet",
    "tiny",
    pretrained_source=PRETRAINED_SOURCE,
    description="ACFNet head on a 1-1-1-1 narrow ECA-ResNet, for CPU tests and demos",
)
def build_acfnet_tiny(num_classes: int) -> ACFNet:
    return ACFNet(
        num_classes,
        layers=(1, 1, 1, 1),
        widths=(8, 16, 32, 64),
        stem_widths=(8, 8, 16),
        aspp_channels=16,
        coarse_channels=32,
        acf_channels=32,
        fine_channels=32,
    )


# Stated identical to AlignSeg's data pipeline (acfnet.md §6) but for the 769² crop; val sliding 769 (stride 513).
register_card(
    MethodCard(
        "acfnet",
        "supervised",
        "caffe_bgr",
        TrainAugment((769, 769), ScaleChoices(0.7, 2.1, 0.1)),
        {"val": Protocol("official", crop=769)},
        outputs=("main", "fine", "coarse", "fcn"),
        head_prefixes=("aspp", "auxlayer", "dsn", "acfhead", "bottleneck"),
    )
)
