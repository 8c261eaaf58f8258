"""The skeleton GALD-Net and DGCNet share (one official repository, ``lxtGH/GALD-DGCNet``).

Both methods are the same network around a different context block: a deep-stem ResNet with
``sequential`` stem keys, full dilation and multi-grid (1, 2, 4) (output stride 8), the head
``conva → <block> → convb → bottleneck(cat[layer4, ·])`` and a training-only ``dsn`` classifier on
layer3. Only the block, its key name (``a2block`` / ``dualgcn``) and whether ``dsn`` has a ReLU differ,
so they are constructor arguments here and nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from segrepro.models.backbones.resnet import DEPTHS, ResNet
from segrepro.models.outputs import Outputs, SegOutput, wants

OUTPUT_STRIDE = 8
# ``build(..., pretrained=)`` file layout for both methods: the repository's ``resnet{50,101}-deep.pth``
# (sequential ``conv1.{0,1,3,4,6}`` + ``bn1`` stem).
PRETRAINED_SOURCE = "gald-deep"

# Constructor arguments of each registered variant, the same for both methods. ``tiny`` keeps the head
# structure on a shallow, narrow backbone for tests and smoke runs.
VARIANT_CONFIGS: dict[str, dict] = {
    "r101": {"layers": DEPTHS[101]},
    "r50": {"layers": DEPTHS[50]},
    "tiny": {
        "layers": (1, 1, 1, 1),
        "widths": (8, 16, 32, 64),
        "stem_widths": (8, 8, 16),
        "head_channels": 32,
        "dsn_channels": 32,
    },
}


def conv_bn_relu(cin: int, cout: int, kernel_size: int = 3) -> nn.Sequential:
    """Keys ``0`` (conv, no bias) and ``1`` (BN), as in the official ``conva``/``convb``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ContextHead(nn.Module):
    """``conva`` → context block → ``convb`` → ``bottleneck`` on the concatenation with the input.

    The block is registered under ``block_name`` so the state_dict keys equal the official ones.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, block_name: str, block: nn.Module) -> None:
        super().__init__()
        self.conva = conv_bn_relu(in_channels, channels)
        self.block_name = block_name
        self.add_module(block_name, block)
        self.convb = conv_bn_relu(channels, channels)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.convb(getattr(self, self.block_name)(self.conva(x)))
        return self.bottleneck(torch.cat([x, out], dim=1))


def dsn_classifier(in_channels: int, channels: int, num_classes: int, relu: bool) -> nn.Sequential:
    """layer3 aux classifier: conv3×3 (+b) → BN → [ReLU] → Dropout2d(0.1) → conv1×1 (+b)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    layers += [nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1)]
    return nn.Sequential(*layers)


class ContextNet(ResNet):
    """Backbone keys at the top level (the manifests' layout), then ``head`` and ``dsn``.

    ``forward`` adapts the official ``[main]`` (eval) / ``[main, dsn]`` (train) lists into
    :class:`SegOutput`: ``main`` at stride 8, ``aux["dsn"]`` at stride 8 in train mode only (and only when
    ``outputs`` asks for it).
    """

    def __init__(
        self,
        block_name: str,
        make_block: Callable[[int], nn.Module],
        *,
        num_classes: int,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_widths: Sequence[int] = (64, 64, 128),
        head_channels: int = 512,
        dsn_channels: int = 512,
        dsn_relu: bool,
    ) -> None:
        super().__init__(
            layers,
            stem="sequential",
            dilation="full",
            multi_grid=(1, 2, 4),
            norm=nn.BatchNorm2d,
            widths=widths,
            stem_widths=stem_widths,
        )
        c3, c4 = self.out_channels[2], self.out_channels[3]
        self.head = ContextHead(c4, head_channels, num_classes, block_name, make_block(head_channels))
        self.dsn = dsn_classifier(c3, dsn_channels, num_classes, relu=dsn_relu)

    def forward(self, x: Tensor, outputs: Outputs = None) -> SegOutput:  # type: ignore[override]
        _, _, c3, c4 = self.forward_stages(x)
        main = self.head(c4)
        if not self.training or not wants(outputs, "dsn"):
            return SegOutput(main, OUTPUT_STRIDE)
        return SegOutput(main, OUTPUT_STRIDE, aux={"dsn": self.dsn(c3)}, aux_strides={"dsn": OUTPUT_STRIDE})


Net = TypeVar("Net", bound=ContextNet)


def build_variant(cls: Callable[..., Net], variant: str, num_classes: int) -> Net:
    """``cls`` in ``variant``'s :data:`VARIANT_CONFIGS` configuration, randomly initialised."""
    return cls(num_classes, **VARIANT_CONFIGS[variant])
