"""AlignSeg-SSL views: fixed-size eval resize and the multi-crop training views (alignseg_ssl.md §4.1, §5).

Kept apart from :mod:`segrepro.data.transforms` because these produce a different sample shape
(three crops, no label) and use PIL's (antialiased) bilinear resize as torchvision on PIL images does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from segrepro.data.transforms import (
    IMAGENET_RGB,
    Compose,
    Normalization,
    Normalize,
    Sample,
    ToTensor,
    randint_inclusive,
    uniform01,
)


class Resize:
    """Fixed-size resize ignoring aspect (AlignSeg-SSL eval): PIL bilinear image, nearest label.

    ``label_size`` lets the label go to a different size (the SSL metric resizes GT 448 → 100).
    """

    def __init__(self, size: tuple[int, int], label_size: tuple[int, int] | None = None) -> None:
        self.size, self.label_size = size, label_size

    def __call__(self, sample: Sample) -> Sample:
        pil = Image.fromarray(sample["image"]).resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        out = dict(sample, image=np.asarray(pil))
        if sample.get("label") is not None:
            label = np.asarray(
                Image.fromarray(sample["label"]).resize((self.size[1], self.size[0]), Image.Resampling.NEAREST)
            )
            if self.label_size is not None:
                label = np.asarray(
                    Image.fromarray(label).resize((self.label_size[1], self.label_size[0]), Image.Resampling.NEAREST)
                )
            out["label"] = label
        return out


def _crop_box(
    gen: torch.Generator | None, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """RandomResizedCrop box (top, left, h, w): area fraction ~ U(scale), log-uniform aspect, 10 tries."""
    for _ in range(10):
        area = h * w * (scale[0] + (scale[1] - scale[0]) * uniform01(gen))
        aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * uniform01(gen))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return randint_inclusive(gen, 0, h - ch), randint_inclusive(gen, 0, w - cw), ch, cw
    ch, cw = h, w  # fallback: the largest centred box with an allowed aspect
    if w / h < ratio[0]:
        ch = min(h, int(round(w / ratio[0])))
    elif w / h > ratio[1]:
        cw = min(w, int(round(h * ratio[1])))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    dh = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    dw = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(dh, 0) * max(dw, 0)


class MultiCrop:
    """AlignSeg-SSL training views: 1 global (scale 0.5–1) + ``n_local`` local crops (0.05–0.25), all
    resized to ``size``² (PIL bilinear), each local box re-drawn until it overlaps the global box by more
    than ``min_overlap`` × image area. No flip, no colour jitter (``augment_image: False``)."""

    def __init__(
        self,
        size: int = 224,
        n_local: int = 2,
        global_scale: tuple[float, float] = (0.5, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.25),
        min_overlap: float = 0.05,
        norm: Normalization = IMAGENET_RGB,
        generator: torch.Generator | None = None,
    ) -> None:
        self.size, self.n_local, self.generator = size, n_local, generator
        self.global_scale, self.local_scale, self.min_overlap = global_scale, local_scale, min_overlap
        self.finish = Compose([Normalize(norm), ToTensor()])

    def __call__(self, sample: Sample) -> Sample:
        pil = Image.fromarray(sample["image"])
        h, w = sample["image"].shape[:2]
        boxes = [_crop_box(self.generator, h, w, self.global_scale)]
        for _ in range(self.n_local):
            for _ in range(100):  # bounded: a tiny image may make the overlap rule unsatisfiable
                box = _crop_box(self.generator, h, w, self.local_scale)
                if _overlap(box, boxes[0]) > self.min_overlap * h * w:
                    break
            boxes.append(box)
        crops = []
        for top, left, ch, cw in boxes:
            view = pil.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
            crops.append(self.finish({"image": np.asarray(view)})["image"])
        return {"crops": crops, "name": sample.get("name", "")}
