"""Per-method augmentation and input normalisation, as the official training scripts do them.

A transform is a callable on the sample dict ``{"image": HxWx3 uint8 RGB, "label": HxW uint8, "name": str}``.
Random transforms draw from an optional ``torch.Generator`` (default: torch's global RNG, which the
DataLoader seeds per worker), so a seeded generator reproduces a pipeline exactly.
Resizing is done with torch: bilinear with half-pixel centres and no antialiasing equals cv2's
INTER_LINEAR that the official code uses; the label uses cv2's INTER_NEAREST rule (floor of dst·src/dst).
Which normalisation and augmentation a method uses is not decided here: the method card
(:mod:`segrepro.models.card`) and the recipe give a :class:`Normalization` and a :class:`TrainAugment`,
and :func:`build_train_transforms` / :func:`build_eval_transforms` turn them into a pipeline.
AlignSeg-SSL's multi-crop and fixed-size eval views are in :mod:`segrepro.data.transforms_ssl`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segrepro.errors import UserError

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]
IGNORE_INDEX = 255


@dataclass(frozen=True)
class Normalization:
    """``(x[channels] * scale - mean) / std`` with ``channels`` "BGR" (cv2-read Caffe style) or "RGB"."""

    channels: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CAFFE_BGR = Normalization("BGR", 1.0, (104.00698793, 116.66876762, 122.67891434), (1.0, 1.0, 1.0))
ANN_BGR = Normalization("BGR", 1.0, (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0))
IMAGENET_RGB = Normalization("RGB", 1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# The named normalisations recipes choose from (params.yaml ``normalization: caffe_bgr``).
NORMALIZATIONS: dict[str, Normalization] = {"caffe_bgr": CAFFE_BGR, "ann_bgr": ANN_BGR, "imagenet_rgb": IMAGENET_RGB}


@dataclass(frozen=True)
class ScaleChoices:
    """Discrete scale factors ``start, start + step, ..., stop`` (both ends included), drawn uniformly."""

    start: float
    stop: float
    step: float

    @property
    def values(self) -> tuple[float, ...]:
        count = int(round((self.stop - self.start) / self.step)) + 1
        return tuple(round(self.start + k * self.step, 6) for k in range(count))


@dataclass(frozen=True)
class ScaleRange:
    """ANN-style continuous scale ``s ~ U(scale)`` and aspect ``a ~ U(aspect)``."""

    scale: tuple[float, float]
    aspect: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True)
class TrainAugment:
    """A training pipeline: crop (h, w), scale augmentation (None: self-supervised multi-crop), flip and
    ANN's brightness shift. Discrete scales give the AlignSeg-family order (scale, crop, normalise, pad
    bottom/right, flip); a range gives ANN's (resize, crop, brightness, flip, normalise, pad at random).
    ``min_side`` first resizes every image to that short side (ANN ADE20K's ``trans_seq``)."""

    crop: tuple[int, int]
    scale: ScaleChoices | ScaleRange | None
    flip: bool = True
    brightness: int = 0
    min_side: int | None = None


ALIGNSEG_SCALES: tuple[float, ...] = ScaleChoices(0.7, 2.1, 0.1).values  # 0.7 + randint(0,14)/10


def uniform01(gen: torch.Generator | None) -> float:
    return float(torch.rand((), generator=gen))


def randint_inclusive(gen: torch.Generator | None, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=gen))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.INTER_LINEAR-equivalent resize of an HxWxC image to ``size`` = (h, w).

    uint8 stays uint8 through torch's fixed-point uint8 kernel (6-8x faster than float at 1024x2048;
    within ±1 of exact bilinear, as cv2's own fixed-point uint8 path is).
    """
    if image.shape[:2] == tuple(size):
        return image
    x = np.array(image, dtype=np.uint8 if image.dtype == np.uint8 else np.float32)  # copy: PIL arrays are read-only
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    return (
        F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)[0].permute(1, 2, 0).numpy()
    )


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.INTER_NEAREST-equivalent resize: source index floor(dst · src / dst_size)."""
    h, w = label.shape[:2]
    rows = np.minimum((np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
    return label[rows[:, None], cols[None, :]]


def _resized(sample: Sample, size: tuple[int, int]) -> Sample:
    out = dict(sample, image=resize_image(sample["image"], size))
    if sample.get("label") is not None:
        out["label"] = resize_label(sample["label"], size)
    return out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample


class ResizeShortSide:
    """Resize so that the short side is ``min_side`` (up or down), keeping the aspect ratio (rounded)."""

    def __init__(self, min_side: int) -> None:
        self.min_side = min_side

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["image"].shape[:2]
        f = self.min_side / min(h, w)
        return _resized(sample, (max(1, int(round(h * f))), max(1, int(round(w * f)))))


class RandomScaleChoice:
    """AlignSeg/ACFNet/GALD/DGCNet: scale both sides by a factor drawn from a discrete set."""

    def __init__(self, scales: Sequence[float] = ALIGNSEG_SCALES, generator: torch.Generator | None = None) -> None:
        self.scales, self.generator = tuple(scales), generator

    def __call__(self, sample: Sample) -> Sample:
        f = self.scales[randint_inclusive(self.generator, 0, len(self.scales) - 1)]
        h, w = sample["image"].shape[:2]
        return _resized(sample, (int(round(h * f)), int(round(w * f))))


class RandomResize:
    """ANN: scale s ~ U(lo, hi) and aspect a ~ U(lo, hi); new size (h·s/√a, w·s·√a), truncated."""

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.5, 2.0),
        aspect_range: tuple[float, float] = (0.9, 1.1),
        generator: torch.Generator | None = None,
    ) -> None:
        self.scale_range, self.aspect_range, self.generator = scale_range, aspect_range, generator

    def __call__(self, sample: Sample) -> Sample:
        s = self.scale_range[0] + (self.scale_range[1] - self.scale_range[0]) * uniform01(self.generator)
        a = self.aspect_range[0] + (self.aspect_range[1] - self.aspect_range[0]) * uniform01(self.generator)
        h, w = sample["image"].shape[:2]
        # torchcv's arithmetic and truncation: int(w·(√a·s)), int(h·(√(1/a)·s))
        return _resized(sample, (max(1, int(h * (math.sqrt(1.0 / a) * s))), max(1, int(w * (math.sqrt(a) * s)))))


class RandomBrightness:
    """ANN: add one integer shift in [-delta, delta] to every channel of the uint8 image, then clip."""

    def __init__(self, delta: int = 10, generator: torch.Generator | None = None) -> None:
        self.delta, self.generator = delta, generator

    def __call__(self, sample: Sample) -> Sample:
        shift = randint_inclusive(self.generator, -self.delta, self.delta)
        image = np.clip(sample["image"].astype(np.int16) + shift, 0, 255).astype(np.uint8)
        return dict(sample, image=image)


class Normalize:
    """Uint8 RGB → float32 HxWx3 in the method's channel order, scaled, mean-subtracted, std-divided."""

    def __init__(self, norm: Normalization) -> None:
        self.norm = norm
        self.mean = np.asarray(norm.mean, np.float32)
        self.inv_std = (1.0 / np.asarray(norm.std, np.float64)).astype(np.float32)

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        if self.norm.channels == "BGR":
            image = image[..., ::-1]
        x = image.astype(np.float32)
        if self.norm.scale != 1.0:
            x *= np.float32(self.norm.scale)
        x -= self.mean
        if self.norm.std != (1.0, 1.0, 1.0):
            x *= self.inv_std
        return dict(sample, image=x)


class PadTo:
    """Pad to at least (h, w) with ``image_fill`` (0 = the mean after normalisation) and ignore labels.

    ``position="bottom_right"`` pads bottom/right (AlignSeg family); ``"random"`` places the image at a
    random offset (ANN's collate step).
    """

    def __init__(
        self,
        size: tuple[int, int],
        position: str = "bottom_right",
        image_fill: float = 0.0,
        label_fill: int = IGNORE_INDEX,
        generator: torch.Generator | None = None,
    ) -> None:
        if position not in ("bottom_right", "random"):
            raise UserError(f"PadTo position must be 'bottom_right' or 'random', got {position!r}")
        self.size, self.position, self.generator = size, position, generator
        self.image_fill, self.label_fill = image_fill, label_fill

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        h, w = image.shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph == 0 and pw == 0:
            return sample
        top = randint_inclusive(self.generator, 0, ph) if self.position == "random" else 0
        left = randint_inclusive(self.generator, 0, pw) if self.position == "random" else 0
        pads = ((top, ph - top), (left, pw - left))
        out = dict(sample, image=np.pad(image, pads + ((0, 0),), constant_values=self.image_fill))
        if sample.get("label") is not None:
            out["label"] = np.pad(sample["label"], pads, constant_values=self.label_fill)
        return out


class RandomCrop:
    """Crop min(size, image size) at a uniformly random position (pad first for a fixed output size)."""

    def __init__(self, size: tuple[int, int], generator: torch.Generator | None = None) -> None:
        self.size, self.generator = size, generator

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["image"].shape[:2]
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        top, left = randint_inclusive(self.generator, 0, h - ch), randint_inclusive(self.generator, 0, w - cw)
        out = dict(sample, image=sample["image"][top : top + ch, left : left + cw])
        if sample.get("label") is not None:
            out["label"] = sample["label"][top : top + ch, left : left + cw]
        return out


class RandomHorizontalFlip:
    """Flip image and label together with probability p."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p, self.generator = p, generator

    def __call__(self, sample: Sample) -> Sample:
        if uniform01(self.generator) >= self.p:
            return sample
        out = dict(sample, image=sample["image"][:, ::-1])
        if sample.get("label") is not None:
            out["label"] = sample["label"][:, ::-1]
        return out


class ToTensor:
    """HxWxC float image → CHW float32 tensor; label → int64 tensor (255 stays the ignore index)."""

    def __call__(self, sample: Sample) -> Sample:
        image = torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32)).permute(2, 0, 1).contiguous()
        out = dict(sample, image=image)
        if sample.get("label") is not None:
            out["label"] = torch.from_numpy(np.ascontiguousarray(sample["label"]).astype(np.int64))
        return out


def build_train_transforms(aug: TrainAugment, norm: Normalization, generator: torch.Generator | None = None) -> Compose:
    """The training pipeline that ``aug`` describes (see :class:`TrainAugment`)."""
    hw = aug.crop
    flip = [RandomHorizontalFlip(0.5, generator=generator)] if aug.flip else []
    brightness = [RandomBrightness(aug.brightness, generator=generator)] if aug.brightness else []
    first = [ResizeShortSide(aug.min_side)] if aug.min_side else []
    if aug.scale is None:
        from segrepro.data.transforms_ssl import MultiCrop

        return Compose([MultiCrop(size=hw[0], norm=norm, generator=generator)])
    if isinstance(aug.scale, ScaleRange):
        return Compose(
            [
                *first,
                RandomResize(aug.scale.scale, aug.scale.aspect, generator=generator),
                RandomCrop(hw, generator=generator),
                *brightness,
                *flip,
                Normalize(norm),
                PadTo(hw, position="random", generator=generator),
                ToTensor(),
            ]
        )
    # Official order: scale, normalise, pad bottom/right (0 / 255), random crop, flip. Cropping first is
    # the same draw (the offset range of the padded image is 0 wherever padding happens) and the same
    # pixels, since normalisation is per pixel; it just normalises crop-size arrays instead of 2x images.
    return Compose(
        [
            *first,
            RandomScaleChoice(aug.scale.values, generator=generator),
            *brightness,
            RandomCrop(hw, generator=generator),
            Normalize(norm),
            PadTo(hw, position="bottom_right"),
            *flip,
            ToTensor(),
        ]
    )


def build_eval_transforms(
    norm: Normalization, size: tuple[int, int] | None = None, label_size: tuple[int, int] | None = None
) -> Compose:
    """Eval pipelines only normalise (sliding-window tiling is the evaluator's job), unless ``size`` asks
    for a fixed input (AlignSeg-SSL: 448², its GT at ``label_size`` 100², as its metric does)."""
    if size is None:
        return Compose([Normalize(norm), ToTensor()])
    from segrepro.data.transforms_ssl import Resize

    return Compose([Resize(size, label_size=label_size), Normalize(norm), ToTensor()])
