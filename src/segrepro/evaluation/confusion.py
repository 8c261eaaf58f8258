"""Confusion matrices accumulated with ``torch.bincount`` on the inputs' device, and the scores built on them.

One generic kernel (:func:`bincount_confusion`) serves every dataset: the Cityscapes evaluator builds its
34×34 labelId matrix with it, and :class:`ConfusionMatrix` adds the ignore/shift conventions of VOC,
COCO-Stuff-27, PASCAL Context and ADE20K. Accumulators are plain tensors, so merging processes is a sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from segrepro.evaluation.basics import LANES, nanmean  # noqa: F401 (nanmean: re-exported)


def as_tensor(x: torch.Tensor | np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """Zero-copy view of a label map as a tensor (moved to ``device`` when given).

    Unsigned types wider than 8 bits (16-bit PNGs) become int32/int64: torch has few kernels for them.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "u" and x.itemsize > 1:
            x = x.astype(np.int32 if x.itemsize == 2 else np.int64)
        x = torch.from_numpy(x if x.flags.c_contiguous else np.ascontiguousarray(x))
    elif x.dtype in (torch.uint16, torch.uint32, torch.uint64):
        x = x.to(torch.int32 if x.dtype == torch.uint16 else torch.int64)
    return x.to(device) if device is not None and x.device != device else x


def _key_dtype(n_bins: int) -> torch.dtype:
    # Narrow keys make the elementwise passes cheaper; bincount accepts any integer dtype.
    return torch.int16 if n_bins <= torch.iinfo(torch.int16).max else torch.int32 if n_bins < 2**31 else torch.int64


@lru_cache(maxsize=8)
def _lane_ids(numel: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return (torch.arange(numel, device=device) % LANES).to(dtype)


def _lane_bincount(key: torch.Tensor, n_bins: int) -> torch.Tensor:
    """``torch.bincount(key, minlength=n_bins)`` for a flat key in ``[0, n_bins)``, via :data:`LANES` sub-histograms."""
    dtype = _key_dtype(n_bins * LANES)
    lanes = torch.add(_lane_ids(key.numel(), key.device, dtype), key.to(dtype), alpha=LANES)
    return torch.bincount(lanes, minlength=n_bins * LANES).view(n_bins, LANES).sum(1)


def bincount_confusion(gt: torch.Tensor, pred: torch.Tensor, num_gt: int, num_pred: int) -> torch.Tensor:
    """``C[g, p]`` = number of pixels with GT ``g`` and prediction ``p`` (int64, on the inputs' device).

    Values must already lie in ``[0, num_gt)`` and ``[0, num_pred)``; callers validate or remap them.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}")
    dtype = _key_dtype(num_gt * num_pred * LANES)
    key = gt.to(dtype, copy=True).mul_(num_pred).add_(pred.to(dtype)).reshape(-1)
    return _lane_bincount(key, num_gt * num_pred).view(num_gt, num_pred)


def iou_from_confusion(
    tp: torch.Tensor | np.ndarray, fp: torch.Tensor | np.ndarray, fn: torch.Tensor | np.ndarray
) -> np.ndarray:
    """IoU per class in float64; NaN where TP+FP+FN = 0 (the class never appears), as every evaluator does."""
    tp, fp, fn = (np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for v in (tp, fp, fn))
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)


@dataclass(frozen=True)
class LabelConvention:
    """How a dataset's GT PNG values become class indices ``0..num_classes-1`` (everything else is ignored)."""

    name: str
    num_classes: int
    ignore_index: int = 255
    reduce_zero_label: bool = False  # ADE20K / PASCAL Context-59: 0 ('other'/background) → ignore, k → k−1

    def gt_to_classes(self, gt: torch.Tensor) -> torch.Tensor:
        """int64 class map with ``num_classes`` for every ignored pixel (ignore value, shifted 0, out of range)."""
        g = gt.to(torch.int64)
        if self.reduce_zero_label:
            g = torch.where(g == 0, self.ignore_index, g - 1)  # raw 255 → 254: out of range, still ignored
        valid = (g >= 0) & (g < self.num_classes) & (g != self.ignore_index)
        return torch.where(valid, g, self.num_classes)


CONVENTIONS: dict[str, LabelConvention] = {
    # VOC 2012: 21 classes incl. background 0; 255 = the void band drawn around objects.
    "voc": LabelConvention("voc", 21),
    # COCO-Stuff-27 (STEGO / AlignSeg-SSL supercategories); 255 = unlabeled / 'other'.
    "coco_stuff27": LabelConvention("coco_stuff27", 27),
    # PASCAL Context, usual 59-class benchmark: background 0 is ignored, labels shift down by one.
    "pascal_context": LabelConvention("pascal_context", 59, reduce_zero_label=True),
    # PASCAL Context with background as a class (60).
    "pascal_context60": LabelConvention("pascal_context60", 60),
    # ADE20K SceneParsing: 0 = 'other' is ignored, 1..150 → 0..149.
    "ade20k": LabelConvention("ade20k", 150, reduce_zero_label=True),
}


@dataclass(frozen=True)
class SegScores:
    """Dataset-level scores; ``iou`` is per class (NaN = class absent from GT and predictions)."""

    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    class_accuracy: np.ndarray  # recall per class, NaN without GT pixels
    mean_class_accuracy: float

    def as_dict(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.iou))]
        return {
            "mIoU": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "mean_class_accuracy": self.mean_class_accuracy,
            "iou": dict(zip(names, self.iou.tolist(), strict=True)),
        }


class ConfusionMatrix:
    """Accumulates a ``(C, C+1)`` matrix: GT class × predicted class, last column = prediction out of range.

    A prediction outside ``0..C-1`` is a false negative for its GT class and a false positive for nobody
    (as mmseg counts it). Ignored GT pixels are dropped before counting.
    """

    def __init__(self, convention: LabelConvention | str, device: torch.device | str | None = None) -> None:
        self.convention = CONVENTIONS[convention] if isinstance(convention, str) else convention
        self.device = torch.device(device) if device is not None else None
        n = self.convention.num_classes
        self.matrix = torch.zeros(n, n + 1, dtype=torch.int64, device=self.device)

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> None:
        """Add one batch of predicted class indices and raw GT label maps (same shape, any leading dims)."""
        gt_t = as_tensor(gt, self.device)
        pred_t = as_tensor(pred, gt_t.device)
        if self.device is None:
            self.device = gt_t.device
            self.matrix = self.matrix.to(gt_t.device)
        n = self.convention.num_classes
        g = self.convention.gt_to_classes(gt_t)
        p = pred_t.to(torch.int64)
        p = torch.where((p >= 0) & (p < n), p, n)
        # Ignored GT pixels land in an extra row that is dropped: no boolean gather over the image.
        self.matrix += bincount_confusion(g, p, n + 1, n + 1)[:n]

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """In-place sum with another accumulator (e.g. one per process or per data shard)."""
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def compute(self) -> SegScores:
        m = self.matrix.to(torch.float64)
        n = self.convention.num_classes
        tp = m.diagonal()
        gt_total = m.sum(1)
        fp = m[:, :n].sum(0) - tp
        fn = gt_total - tp
        iou = iou_from_confusion(tp, fp, fn)
        acc = iou_from_confusion(tp, torch.zeros_like(tp), fn)
        total = float(gt_total.sum())
        return SegScores(
            iou=iou,
            miou=nanmean(iou),
            pixel_accuracy=float(tp.sum()) / total if total else float("nan"),
            class_accuracy=acc,
            mean_class_accuracy=nanmean(acc),
        )
