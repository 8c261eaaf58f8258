"""Two cluster-matching metrics for self-supervised segmentation, deliberately named apart.

* :class:`PerImageMajorityVoteMIoU` — the **official AlignSeg-SSL protocol** (``evaluate/sup_overcluster.py``,
  reference alignseg_ssl.md §5.2) behind its 69.5 (VOC) / 35.1 (COCO-Stuff-27): at 100×100, every image is
  matched **against its own GT**: each predicted cluster goes to the GT class of that image with the highest
  precision (its majority class), IoU is averaged over the image's GT classes, then over images. It sees
  the GT per image, so it is not comparable with dataset-level numbers.
* :class:`DatasetHungarianMIoU` — the **standard protocol** (STEGO and most unsupervised work): one
  confusion matrix over the whole dataset, one-to-one Hungarian matching of clusters to classes
  maximising matched pixels, then mIoU and pixel accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from segrepro.evaluation.confusion import (
    CONVENTIONS,
    LabelConvention,
    as_tensor,
    bincount_confusion,
    iou_from_confusion,
    nanmean,
)

EVAL_SIZE = 100  # AlignSeg's mask_eval_size


def resize_nearest(labels: torch.Tensor | np.ndarray, size: int = EVAL_SIZE) -> torch.Tensor:
    """``(H, W)`` or ``(B, H, W)`` label maps to ``size×size`` with torch's 'nearest', as the official eval does."""
    t = as_tensor(labels)
    squeeze = t.dim() == 2
    out = F.interpolate(t.reshape(-1, 1, *t.shape[-2:]).float(), size=(size, size), mode="nearest")
    out = out[:, 0].to(t.dtype)
    return out[0] if squeeze else out


class PerImageMajorityVoteMIoU:
    """Official AlignSeg-SSL metric: per-image majority-vote matching, mean IoU per image, mean over images.

    ``compute()["mIoU"]`` is the number the paper reports; ``"mIoU_exclude_first"`` is the script's second
    print (each image's smallest GT class, usually background, left out).
    """

    def __init__(self, num_clusters: int, ignore_index: int = 255) -> None:
        self.num_clusters = num_clusters
        self.ignore_index = ignore_index
        self.per_image: list[float] = []
        self.per_image_exclude_first: list[float] = []

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> None:
        """One image (``(H, W)``) or a batch (``(B, H, W)``) of cluster ids ``0..num_clusters-1`` and GT labels."""
        pred_t, gt_t = as_tensor(pred), as_tensor(gt)
        if pred_t.shape != gt_t.shape:
            raise ValueError(f"prediction shape {tuple(pred_t.shape)} differs from ground truth {tuple(gt_t.shape)}")
        if pred_t.dim() == 3:
            for p, g in zip(pred_t, gt_t, strict=True):
                self.update(p, g)
            return
        valid = gt_t != self.ignore_index
        g, p = gt_t[valid].to(torch.int64), pred_t[valid].to(torch.int64)
        if p.numel() == 0:
            return  # no labelled pixel: the official script would average a NaN into the result
        if int(p.min()) < 0 or int(p.max()) >= self.num_clusters:
            raise ValueError(f"cluster ids must lie in 0..{self.num_clusters - 1}")
        classes, g_idx = torch.unique(g, return_inverse=True)  # sorted: ties go to the smallest class
        k, q = len(classes), self.num_clusters
        counts = bincount_confusion(g_idx, p, k, q)
        match = counts.argmax(0)  # highest precision = largest overlap within a cluster; first max on ties
        onehot = F.one_hot(match, k).T.to(torch.int64)  # (k, q): cluster q assigned to class k
        tp = (counts * onehot).sum(1)
        pred_area = onehot @ counts.sum(0)
        iou = (tp.double() / (counts.sum(1) + pred_area - tp).double()).numpy()
        self.per_image.append(float(np.mean(iou)))
        self.per_image_exclude_first.append(float(np.mean(iou[1:] if len(iou) > 1 else iou)))

    def compute(self) -> dict:
        return {
            "protocol": "alignseg_official_per_image_majority_vote",
            "mIoU": float(np.mean(self.per_image)) if self.per_image else float("nan"),
            "mIoU_exclude_first": float(np.mean(self.per_image_exclude_first)) if self.per_image else float("nan"),
            "per_image_mIoU": list(self.per_image),
            "per_image_mIoU_exclude_first": list(self.per_image_exclude_first),
            "images": len(self.per_image),
        }


class DatasetHungarianMIoU:
    """Standard unsupervised protocol: dataset confusion matrix, one-to-one Hungarian matching (max overlap).

    With more clusters than classes the unmatched clusters predict no class (their pixels are FN of their
    GT class); cluster ids outside ``0..num_clusters-1`` are dropped, as STEGO masks them.
    """

    def __init__(
        self, convention: LabelConvention | str, num_clusters: int | None = None, device: torch.device | str = "cpu"
    ) -> None:
        self.convention = CONVENTIONS[convention] if isinstance(convention, str) else convention
        self.num_clusters = num_clusters or self.convention.num_classes
        c = self.convention.num_classes
        self.matrix = torch.zeros(c, self.num_clusters, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> None:
        c, k = self.convention.num_classes, self.num_clusters
        g = self.convention.gt_to_classes(as_tensor(gt, self.matrix.device))
        p = as_tensor(pred, self.matrix.device).to(torch.int64)
        p = torch.where((p >= 0) & (p < k), p, k)
        self.matrix += bincount_confusion(g, p, c + 1, k + 1)[:c, :k]

    def merge(self, other: DatasetHungarianMIoU) -> DatasetHungarianMIoU:
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def compute(self) -> dict:
        conf = self.matrix.cpu().numpy()
        rows, cols = linear_sum_assignment(conf, maximize=True)
        cluster_to_class = np.full(self.num_clusters, -1)
        cluster_to_class[cols] = rows
        tp = np.zeros(self.convention.num_classes, dtype=np.int64)
        pred_area = np.zeros_like(tp)
        tp[rows] = conf[rows, cols]
        pred_area[rows] = conf[:, cols].sum(0)
        gt_area = conf.sum(1)
        iou = iou_from_confusion(tp, pred_area - tp, gt_area - tp)
        total = int(conf.sum())
        return {
            "protocol": "dataset_hungarian",
            "mIoU": nanmean(iou),
            "pixel_accuracy": float(tp.sum()) / total if total else float("nan"),
            "iou": iou.tolist(),
            "cluster_to_class": cluster_to_class.tolist(),
        }
