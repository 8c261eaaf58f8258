"""Per-image counting for the Cityscapes metrics: the labelId confusion and the per-instance terms.

The official script builds a 34×34 confusion matrix and then loops over instances with one full-image mask
each. Here one pass over the pixels gives both the confusion matrix and an instance histogram
(instance × predicted-id code); the per-instance formulas then run on a few dozen rows.

* CPU: :func:`fused_histograms`, one numba loop reading each pixel's (prediction, labelId, instanceId)
  once, after a vectorised min/max pass that validates the ids so the loop never writes out of bounds.
  Four interleaved sub-histograms keep long runs of one label from serialising on one counter
  (store-to-load forwarding). The table sizes are module constants that numba compiles in.
* Other devices: :func:`device_histograms`, ``bincount`` over ``gt*34+pred`` and over
  ``row*11+code`` on the device; only the small instance histogram comes back to the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np

from segrepro.data import cityscapes_labels as csl
from segrepro.evaluation.basics import LANES

if TYPE_CHECKING:
    import torch

N = csl.NUM_LABEL_IDS  # 34 labelIds, 0..33
FIRST_INST = min(lab.id for lab in csl.LABELS if lab.hasInstances)  # 24 (person): instance classes are 24..33
N_CODES = N - FIRST_INST + 1  # predicted-id codes: 0 = below 24, 1..10 = labelIds 24..33
ROW_BASE = FIRST_INST * 1000 - 1  # instance ids below FIRST_INST*1000 belong to no instance class


def _tables() -> dict[str, np.ndarray]:
    """Static per-labelId tables derived from the official label list."""
    by_id = {lab.id: lab for lab in csl.LABELS if lab.id >= 0}
    evaluated = np.array([not by_id[i].ignoreInEval for i in range(N)])
    inst_class = np.array([by_id[i].hasInstances and not by_id[i].ignoreInEval for i in range(N)])
    sizes = csl.avg_instance_size()
    avg = np.array([sizes.get(by_id[i].name, np.nan) for i in range(N)], dtype=np.float64)
    cats = csl.category_names()
    cat_of = np.array([cats.index(by_id[i].category) for i in range(N)])
    cat_iou = np.zeros((len(cats), N), dtype=bool)  # non-ignored members: category IoU
    cat_inst = np.zeros((len(cats), N), dtype=bool)  # all members, only where every member has instances
    for k, cat in enumerate(cats):
        members = csl.category_labels(cat)
        cat_iou[k, [lab.id for lab in members if not lab.ignoreInEval]] = True
        if all(lab.hasInstances for lab in members):
            cat_inst[k, [lab.id for lab in members]] = True
    return {
        "evaluated": evaluated,
        "inst_class": inst_class,
        "avg": avg,
        "cat_of": cat_of,
        "cat_iou": cat_iou,
        "cat_inst": cat_inst,
    }


TABLES = _tables()
LABEL_NAMES = [csl.cs_labels.id2label[i].name for i in range(N)]
CATEGORY_NAMES = csl.category_names()


def _check_ids(what: str, lo: int, hi: int) -> None:
    if lo < 0 or hi >= N:
        raise ValueError(
            f"{what} holds id {hi if hi >= N else lo}; labelIds must be 0..{N - 1}"
            + (" (trainIds or the 255 ignore value written by mistake?)" if hi >= N else "")
        )


def _instance_rows(lo: int, hi: int) -> int:
    """Validates an instance map's extremes; returns the dense histogram's row count."""
    if hi >= N * 1000:
        raise ValueError(f"instance id {hi} encodes labelId {hi // 1000}; labelIds must be 0..{N - 1}")
    if lo < 0:
        raise ValueError(f"instance id {lo} is negative; instanceIds are labelId or labelId*1000+k")
    return max(hi - ROW_BASE, 0) + 1


def _extremes(a: np.ndarray) -> tuple[int, int]:
    return (int(a.min()), int(a.max())) if a.size else (0, 0)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _count(
    pred: np.ndarray, gt: np.ndarray, inst: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    conf = np.zeros((LANES, N * N), dtype=np.int32)
    hist = np.zeros((LANES, n_rows, N_CODES), dtype=np.int32)
    with_inst = inst.size == pred.size
    for i in range(pred.size):
        lane = i & (LANES - 1)
        p = np.intp(pred[i])
        conf[lane, np.intp(gt[i]) * N + p] += 1
        if with_inst:
            v = np.intp(inst[i])
            if v > ROW_BASE:
                hist[lane, v - ROW_BASE, max(p - FIRST_INST + 1, 0)] += 1
    # Sum the lanes, keeping only the instances present (rows are sparse in instance-id space).
    total = np.zeros((n_rows, N_CODES), dtype=np.int64)
    present = np.zeros(n_rows, dtype=np.bool_)
    for r in range(1, n_rows):
        for c in range(N_CODES):
            for lane in range(LANES):
                total[r, c] += hist[lane, r, c]
            present[r] |= total[r, c] > 0
    rows = np.nonzero(present)[0]
    return conf.sum(axis=0).astype(np.int64).reshape(N, N), rows + ROW_BASE, total[rows]


def fused_histograms(
    pred: np.ndarray, gt: np.ndarray, inst: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(conf (N, N), instance ids (k,), hist (k, N_CODES))``, int64, for one image on CPU.

    ``hist[j, c]``: pixels of instance ``ids[j]`` whose prediction has code ``c`` (0 = labelId below
    ``FIRST_INST``, ``m`` = labelId ``FIRST_INST - 1 + m``). Without ``inst`` (any batch shape) only
    ``conf`` is filled. Raises ValueError for ids outside 0..N-1 (the official script crashes there).
    """
    pred, gt = (np.ascontiguousarray(a).reshape(-1) for a in (pred, gt))
    _check_ids("prediction", *_extremes(pred))
    _check_ids("ground truth", *_extremes(gt))
    n_rows = 1
    if inst is None:
        inst = np.zeros(0, dtype=np.uint8)
    else:
        inst = np.ascontiguousarray(inst).reshape(-1)
        n_rows = _instance_rows(*_extremes(inst))
    return _count(pred, gt, inst, n_rows)


def device_histograms(
    pred: torch.Tensor, gt: torch.Tensor, inst: torch.Tensor | None
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """:func:`fused_histograms` with ``bincount`` on the inputs' device; ``conf`` stays there."""
    import torch

    from segrepro.evaluation.confusion import bincount_confusion

    for what, t in (("prediction", pred), ("ground truth", gt)):
        _check_ids(what, *((0, int(t.max())) if t.dtype == torch.uint8 else (int(v) for v in torch.aminmax(t))))
    n_rows = 1 if inst is None else _instance_rows(*(int(v) for v in torch.aminmax(inst)))
    conf = bincount_confusion(gt, pred, N, N)
    if n_rows == 1:
        return conf, np.zeros(0, dtype=np.int64), np.zeros((0, N_CODES), dtype=np.int64)
    # row = instanceId - ROW_BASE (row 0: every pixel outside an instance), code as in the fused kernel.
    assert inst is not None  # n_rows > 1 only with an instance map
    code = pred.clamp(min=FIRST_INST - 1).sub_(FIRST_INST - 1).to(torch.int32)
    key = inst.clamp(min=ROW_BASE).to(torch.int32)  # a new tensor: the caller's map is never written
    key = key.sub_(ROW_BASE).mul_(N_CODES).add_(code).reshape(-1)
    hist = torch.bincount(key, minlength=n_rows * N_CODES).view(n_rows, N_CODES).cpu().numpy()
    rows = np.nonzero(hist[1:].sum(1))[0] + 1
    return conf, rows + ROW_BASE, hist[rows]


def instance_terms(ids: np.ndarray, hist: np.ndarray) -> dict[str, np.ndarray]:
    """One image's additions to the evaluator's instance entries, from its instance histogram.

    Per instance, as the official script: tp = pixels predicted as its own labelId, fn = size - tp, weight =
    avgClassSize / size; the category term counts every member of the category (caravan/trailer for
    vehicle). Instances of ignored classes (caravan, trailer) are skipped.
    """
    lab = ids // 1000
    keep = TABLES["inst_class"][lab]
    lab, hist = lab[keep], hist[keep]
    size = hist.sum(1)
    tp = hist[np.arange(len(lab)), lab - (FIRST_INST - 1)]
    cat = TABLES["cat_of"][lab]
    cat_tp = (hist * TABLES["cat_inst"][cat][:, FIRST_INST - 1 :]).sum(1)
    weight = TABLES["avg"][lab] / size  # official: avgClassSize / float(instSize)
    per_class = {
        "inst_count": np.ones(len(lab)),
        "inst_tp": tp,
        "inst_fn": size - tp,
        "inst_tp_w": tp * weight,
        "inst_fn_w": (size - tp) * weight,
    }
    n_cat = len(CATEGORY_NAMES)
    return {
        **{k: np.bincount(lab, weights=v, minlength=N) for k, v in per_class.items()},
        "cat_tp_w": np.bincount(cat, weights=cat_tp * weight, minlength=n_cat),
        "cat_fn_w": np.bincount(cat, weights=(size - cat_tp) * weight, minlength=n_cat),
    }
