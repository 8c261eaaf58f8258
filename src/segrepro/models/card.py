"""Method cards: everything the pipeline knows about a method besides its builders, in one place.

A card names the method's objective kind, its input normalisation, its training augmentation (crop and
scale), its official test-time protocol per split, the outputs its model returns and the parameter
prefixes of its head. Each method module registers its card next to its builders
(:func:`segrepro.models.registry.register_card`); transforms, inference, predict and the bench commands
read it, and a recipe in params.yaml overrides any of its defaults by giving the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segrepro.data.transforms import NORMALIZATIONS, ScaleChoices, ScaleRange, TrainAugment

OBJECTIVES = ("supervised", "self_supervised")


def third_overlap_stride(crop: int) -> int:
    """AlignSeg/GALD stride for 1/3 overlap: ``ceil(crop · 2/3)`` (872 → 582, 832 → 555, 769 → 513)."""
    return math.ceil(crop * (1 - 1 / 3))


@dataclass(frozen=True)
class Protocol:
    """One inference protocol; ``crop=None`` means the whole image in one pass. ``resize`` (short side, long-side
    cap) first brings the image to that size, the size the scales are relative to (ANN ADE20K / Context)."""

    name: str
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crop: int | None = None
    stride: int | None = None  # default: third_overlap_stride(crop)
    resize: tuple[int, int] | None = None

    def describe(self) -> str:
        window = f"sliding {self.crop}/{self.tile_stride}" if self.crop else "whole image"
        base = f", short side {self.resize[0]} (long ≤ {self.resize[1]})" if self.resize else ""
        return f"{self.name}: {window}{base}, scales {list(self.scales)}, flip {self.flip}"

    def base_size(self, h: int, w: int) -> tuple[int, int]:
        """The size the scales apply to: (h, w), or ``resize``'s short side capped by its long side."""
        if self.resize is None:
            return h, w
        short, cap = self.resize
        f = min(short / min(h, w), cap / max(h, w))
        return max(1, int(round(h * f))), max(1, int(round(w * f)))

    @property
    def tile_stride(self) -> int | None:
        if self.crop is None:
            return None
        return self.stride or third_overlap_stride(self.crop)


@dataclass(frozen=True)
class MethodCard:
    """One method's facts. ``eval_protocols`` maps a split to its official protocol ("val" is the
    fallback for other splits); ``outputs`` are the names a train-mode forward returns ("main" plus the
    aux names loss terms may use); ``head_prefixes`` the parameter-name prefixes ``head_lr_mult`` applies to;
    ``eval_size``/``eval_label_size`` a fixed eval input and label size (AlignSeg-SSL)."""

    method: str
    objective: str
    normalization: str  # a key of segrepro.data.transforms.NORMALIZATIONS
    train: TrainAugment
    eval_protocols: Mapping[str, Protocol]
    outputs: tuple[str, ...]
    head_prefixes: tuple[str, ...] = ()
    eval_size: tuple[int, int] | None = None
    eval_label_size: tuple[int, int] | None = None
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"{self.method}: objective must be one of {OBJECTIVES}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"{self.method}: normalization must be one of {sorted(NORMALIZATIONS)}")
        if "val" not in self.eval_protocols or "main" not in self.outputs:
            raise ValueError(f"{self.method}: a card needs a 'val' protocol and a 'main' output")

    def protocol(self, split: str) -> Protocol:
        return self.eval_protocols.get(split, self.eval_protocols["val"])

    def recipe_defaults(self) -> dict[str, Any]:
        """The card's defaults in params.yaml's recipe format (a recipe that gives a key overrides it)."""
        h, w = self.train.crop
        out: dict[str, Any] = {
            "objective": self.objective,
            "normalization": self.normalization,
            "crop": h if h == w else [h, w],
            "flip": self.train.flip,
            "brightness": self.train.brightness,
        }
        scale = self.train.scale
        if isinstance(scale, ScaleChoices):
            out["scale"] = {"choices": [scale.start, scale.stop, scale.step]}
        elif isinstance(scale, ScaleRange):
            out["scale"] = {"range": list(scale.scale), "aspect": list(scale.aspect)}
        return out
