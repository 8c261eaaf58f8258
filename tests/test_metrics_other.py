"""mIoU and pixel accuracy with each dataset's ignore convention, checked against per-class mask counting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segrepro.evaluation.confusion import CONVENTIONS, ConfusionMatrix


def reference_scores(pred: np.ndarray, raw_gt: np.ndarray, n: int, ignored: np.ndarray, shift: int) -> tuple:
    """Independent count: per class, boolean masks over the non-ignored pixels."""
    valid = ~ignored
    gt = raw_gt.astype(np.int64) - shift
    ious = []
    for c in range(n):
        g, p = (gt == c) & valid, (pred == c) & valid
        tp, union = np.sum(g & p), np.sum(g | p)
        ious.append(tp / union if union else math.nan)
    correct = np.sum((gt == pred) & valid)
    return np.array(ious), correct / valid.sum()


def test_voc_hand_example() -> None:
    gt = np.array([[0, 0, 255, 1], [1, 1, 255, 15]], dtype=np.uint8)  # 255: the VOC boundary band
    pred = np.array([[0, 1, 1, 1], [1, 255, 0, 15]], dtype=np.uint8)  # 255 predicted on a labelled pixel
    cm = ConfusionMatrix("voc")
    cm.update(pred, gt)
    s = cm.compute()
    # background: tp 1, fp 0 (the pred-0 pixel sits on the band), fn 1 → 1/2; person-1 class 1: tp 2, fp 1,
    # fn 1 (the 255 prediction) → 2/4; class 15: 1/1; other classes absent → NaN.
    assert s.iou[0] == 0.5 and s.iou[1] == 0.5 and s.iou[15] == 1.0
    assert np.isnan(s.iou[2:15]).all() and np.isnan(s.iou[16:]).all()
    assert s.miou == pytest.approx((0.5 + 0.5 + 1.0) / 3, abs=1e-15)
    assert s.pixel_accuracy == 4 / 6


@pytest.mark.parametrize("name", ["voc", "coco_stuff27", "pascal_context", "pascal_context60", "ade20k"])
def test_conventions_match_mask_counting(name: str) -> None:
    conv = CONVENTIONS[name]
    n, shift = conv.num_classes, int(conv.reduce_zero_label)
    rng = np.random.default_rng(7)
    raw_gt = rng.integers(0, n + shift, size=(3, 40, 50)).astype(np.uint8)
    raw_gt[:, ::7] = 255  # ignore value in every dataset
    raw_gt[raw_gt == n // 2 + shift] = 254 if shift else 255  # one class absent from GT...
    pred = rng.integers(0, n, size=raw_gt.shape).astype(np.int64)
    pred[pred == n // 2] = n // 2 + 1  # ...and from predictions: NaN, left out of mIoU
    pred[:, 0, :5] = 255  # out-of-range prediction: a plain miss
    ignored = (raw_gt == 255) | (raw_gt == 254) & bool(shift) | ((raw_gt == 0) & bool(shift))
    ref_iou, ref_acc = reference_scores(pred, raw_gt, n, ignored, shift)

    whole, halves = ConfusionMatrix(name), ConfusionMatrix(conv)
    whole.update(torch.from_numpy(pred), torch.from_numpy(raw_gt))
    other = ConfusionMatrix(name)
    halves.update(pred[:1], raw_gt[:1])
    other.update(pred[1:], raw_gt[1:])
    halves.merge(other)
    for cm in (whole, halves):
        s = cm.compute()
        np.testing.assert_allclose(s.iou, ref_iou, rtol=0, atol=1e-15)
        assert math.isnan(s.iou[n // 2])
        assert s.miou == pytest.approx(np.nanmean(ref_iou), abs=1e-12)
        assert s.pixel_accuracy == pytest.approx(ref_acc, abs=1e-15)


def test_ade_shift_maps_raw_one_to_class_zero() -> None:
    raw = np.array([[0, 1, 150, 255]], dtype=np.uint8)
    cm = ConfusionMatrix("ade20k")
    cm.update(np.array([[0, 0, 149, 0]]), raw)
    s = cm.compute()
    assert s.iou[0] == 1.0 and s.iou[149] == 1.0 and s.pixel_accuracy == 1.0
    assert int(cm.matrix.sum()) == 2  # 'other' (0) and 255 never counted
    assert s.as_dict()["mIoU"] == 1.0
