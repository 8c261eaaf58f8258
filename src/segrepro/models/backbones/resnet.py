"""Deep-stem (dilated) ResNet-50/101 in the three official key layouts.

One implementation covers every supervised method; what differs between the official repos is
expressed as constructor arguments (see reference/README.md "cross-method pitfalls" 2 and 3):

* ``stem``: ``"split"`` (``conv1..3/bn1..3``; AlignSeg, ACFNet, MIT ImageNet files),
  ``"sequential"`` (``conv1.{0,1,3,4,6}`` + ``bn1``; GALD, DGCNet) or ``"prefix"``
  (``prefix.{conv,bn}{1,2,3}``; ANN, which also nests the backbone under ``backbone.``).
* ``dilation``: ``"none"`` (output stride 32; AlignSeg), ``"full"`` (layer3 d2, layer4 d4·multi-grid
  from the first block; ACFNet, GALD, DGCNet) or ``"psp"`` (PSPNet's rule, half dilation in the first
  block of each dilated stage; ANN).
* ``eca_kernel``: ECA channel attention after ``bn3`` of every block (ACFNet's ECA-ResNet).

ReLUs and residual adds work in place on tensors nothing else reads (a norm's or a sum's output), as
torchvision's do: the same numbers and state_dict, less memory traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

NormFactory = Callable[[int], nn.Module]

DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STEMS = ("split", "sequential", "prefix")
DILATIONS = ("none", "full", "psp")


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class ECA(nn.Module):
    """Efficient channel attention: a 1-D conv over the pooled channel vector, then a sigmoid gate."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean(dim=(2, 3), keepdim=True)  # (n, c, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3×3 conv), optional ECA before the residual add."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        norm: NormFactory,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        eca_kernel: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        if eca_kernel is not None:
            self.eca = ECA(eca_kernel)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if hasattr(self, "eca"):
            out = self.eca(out)
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def _stage_dilations(dilation: str, stage: int, blocks: int, multi_grid: Sequence[int]) -> tuple[int, list[int]]:
    """(stride, per-block 3×3 dilations) of stage 2..4 (1-based ``stage``) under a convention."""
    if stage <= 2 or dilation == "none":
        return (1 if stage == 1 else 2), [1] * blocks
    base = 2 if stage == 3 else 4
    grid = list(multi_grid) if stage == 4 else [1] * blocks
    grid = (grid * blocks)[:blocks] if len(grid) < blocks else grid[:blocks]
    dil = [base * g for g in grid]
    if dilation == "psp":
        dil[0] = max(1, dil[0] // 2)
    return 1, dil


class ResNet(nn.Module):
    """Deep-stem ResNet returning the outputs of layer1..layer4.

    ``widths`` are the bottleneck widths of the four stages (64/128/256/512 officially, smaller in tiny
    variants); ``stem_widths`` the three stem convs (64/64/128 officially).
    """

    conv1: nn.Module  # a conv of the split stem, or the whole sequential stem
    layer1: nn.Sequential  # layer1..4 are added by name in __init__'s loop
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        layers: Sequence[int] = DEPTHS[101],
        *,
        stem: str = "split",
        dilation: str = "none",
        multi_grid: Sequence[int] = (1, 1, 1),
        norm: NormFactory = nn.BatchNorm2d,
        eca_kernel: int | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_widths: Sequence[int] = (64, 64, 128),
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if dilation not in DILATIONS:
            raise ValueError(f"dilation must be one of {DILATIONS}, got {dilation!r}")
        self.stem_layout = stem
        s0, s1, s2 = stem_widths
        if stem == "split":
            self.conv1, self.bn1 = conv3x3(3, s0, stride=2), norm(s0)
            self.conv2, self.bn2 = conv3x3(s0, s1), norm(s1)
            self.conv3, self.bn3 = conv3x3(s1, s2), norm(s2)
        elif stem == "sequential":
            self.conv1 = nn.Sequential(
                conv3x3(3, s0, stride=2),
                norm(s0),
                nn.ReLU(inplace=True),
                conv3x3(s0, s1),
                norm(s1),
                nn.ReLU(inplace=True),
                conv3x3(s1, s2),
            )
            self.bn1 = norm(s2)
        else:
            self.prefix = nn.Sequential(
                OrderedDict(
                    [
                        ("conv1", conv3x3(3, s0, stride=2)),
                        ("bn1", norm(s0)),
                        ("relu1", nn.ReLU(inplace=True)),
                        ("conv2", conv3x3(s0, s1)),
                        ("bn2", norm(s1)),
                        ("relu2", nn.ReLU(inplace=True)),
                        ("conv3", conv3x3(s1, s2)),
                        ("bn3", norm(s2)),
                        ("relu3", nn.ReLU(inplace=True)),
                    ]
                )
            )
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        inplanes = s2
        self.out_channels: list[int] = []
        for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True), start=1):
            stride, dils = _stage_dilations(dilation, i, blocks, multi_grid)
            if i == 1:
                stride = 1
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), norm(planes * 4)
                )
            stage = [Bottleneck(inplanes, planes, norm, stride, dils[0], downsample, eca_kernel)]
            inplanes = planes * 4
            stage += [Bottleneck(inplanes, planes, norm, 1, d, None, eca_kernel) for d in dils[1:]]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            self.out_channels.append(inplanes)

    def stem(self, x: Tensor) -> Tensor:
        if self.stem_layout == "split":
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        elif self.stem_layout == "sequential":
            x = self.relu(self.bn1(self.conv1(x)))
        else:
            x = self.prefix(x)
        return self.maxpool(x)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x1 = self.layer1(self.stem(x))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return x1, x2, x3, x4

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.forward_stages(x)
