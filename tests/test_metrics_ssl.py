"""Self-supervised metrics: the official AlignSeg per-image protocol on its fixture, and dataset Hungarian."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from segrepro.evaluation.confusion import LabelConvention
from segrepro.evaluation.ssl_metrics import DatasetHungarianMIoU, PerImageMajorityVoteMIoU, resize_nearest


@pytest.mark.fixtures
def test_official_protocol_matches_fixture(fixtures_dir: Path) -> None:
    d = fixtures_dir / "alignseg_ssl"
    gt, pred = np.load(d / "eval_protocol_gt.npy"), np.load(d / "eval_protocol_pred.npy")
    expected = json.loads((d / "eval_protocol_expected.json").read_text())
    metric = PerImageMajorityVoteMIoU(num_clusters=5)
    metric.update(pred, gt)  # a batch of 3 images, each matched against its own GT
    got = metric.compute()
    assert got["protocol"] == "alignseg_official_per_image_majority_vote"
    np.testing.assert_allclose(got["per_image_mIoU"], expected["per_image_mIoU"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["per_image_mIoU_exclude_first"], expected["per_image_mIoU_exclude_first"],
                               rtol=0, atol=1e-12)
    assert got["mIoU"] == pytest.approx(expected["reported_mIoU"], abs=1e-12)
    assert got["mIoU_exclude_first"] == pytest.approx(expected["reported_mIoU_exclude_first"], abs=1e-12)


@pytest.mark.fixtures
def test_eval_resize_matches_official_upsampling(fixtures_dir: Path) -> None:
    d = fixtures_dir / "alignseg_ssl"
    patch, eval100 = np.load(d / "voc_224_labels_patch.npy"), np.load(d / "voc_224_labels_eval100.npy")
    np.testing.assert_array_equal(resize_nearest(patch).numpy(), eval100)


def test_majority_vote_rules_by_hand() -> None:
    gt = np.array([[3, 3, 3, 7, 7, 255]])
    pred = np.array([[0, 0, 1, 1, 2, 2]])
    metric = PerImageMajorityVoteMIoU(num_clusters=4)
    metric.update(pred, gt)
    # cluster 0 → 3 (majority); cluster 1 ties 3 vs 7 → 3 (smallest); cluster 2 → 7 (the 255 pixel is
    # dropped); empty cluster 3 → 3 (harmless). IoU(3) = 3/4, IoU(7) = 1/2.
    got = metric.compute()
    assert got["per_image_mIoU"] == [(0.75 + 0.5) / 2]
    assert got["per_image_mIoU_exclude_first"] == [0.5]
    with pytest.raises(ValueError, match="cluster ids"):
        metric.update(np.array([[4]]), np.array([[3]]))


def brute_force_miou(conf: np.ndarray) -> float:
    """Best one-to-one assignment by enumerating permutations (square case), scored as the metric does."""
    best, best_iou = -1, 0.0
    for perm in itertools.permutations(range(conf.shape[1])):
        matched = sum(conf[c, perm[c]] for c in range(conf.shape[0]))
        if matched > best:
            tp = np.array([conf[c, perm[c]] for c in range(conf.shape[0])], dtype=float)
            union = conf.sum(1) + conf[:, list(perm)].sum(0) - tp
            best, best_iou = matched, float(np.nanmean(np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)))
    return best_iou


def test_hungarian_finds_the_permutation() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 21, size=(2, 30, 30)).astype(np.uint8)
    gt[:, 0] = 255
    perm = rng.permutation(21)
    metric = DatasetHungarianMIoU("voc")
    metric.update(perm[np.minimum(gt, 20)], gt)
    got = metric.compute()
    assert got["protocol"] == "dataset_hungarian" and got["mIoU"] == 1.0 and got["pixel_accuracy"] == 1.0
    assert [got["cluster_to_class"][perm[c]] for c in range(21)] == list(range(21))


def test_hungarian_against_brute_force_and_merge() -> None:
    rng = np.random.default_rng(1)
    conv = LabelConvention("tiny", 5)
    gt = rng.integers(0, 5, size=(4, 20, 20))
    pred = np.where(rng.random(gt.shape) < 0.6, (gt + 2) % 5, rng.integers(0, 5, size=gt.shape))
    whole, part = DatasetHungarianMIoU(conv), DatasetHungarianMIoU(conv)
    whole.update(pred, gt)
    part.update(pred[:2], gt[:2])
    rest = DatasetHungarianMIoU(conv)
    rest.update(pred[2:], gt[2:])
    part.merge(rest)
    conf = whole.matrix.numpy()
    assert whole.compute()["mIoU"] == pytest.approx(brute_force_miou(conf), abs=1e-12)
    assert part.compute() == whole.compute()


def test_hungarian_extra_clusters_count_as_misses() -> None:
    gt = np.array([[0, 0, 0, 1, 1, 255]])
    pred = np.array([[0, 0, 2, 1, 1, 3]])  # cluster 2 unmatched: its pixel is a miss for class 0
    metric = DatasetHungarianMIoU("coco_stuff27", num_clusters=4)
    metric.update(pred, gt)
    got = metric.compute()
    assert got["iou"][0] == 2 / 3 and got["iou"][1] == 1.0 and got["pixel_accuracy"] == 4 / 5
    assert got["cluster_to_class"][0] == 0 and got["cluster_to_class"][1] == 1
