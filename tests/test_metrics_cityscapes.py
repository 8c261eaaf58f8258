"""Cityscapes metrics against cityscapesscripts' evaluator, run here on generated PNGs in the official layout.

The evaluator calls ``np.in1d`` (removed in NumPy 2.4); the alias is installed for these tests only.
Edge cases covered by the data: ignored-id predictions (FN), caravan/trailer instances (skipped) and
caravan predictions on cars (vehicle iIoU hits), a class absent from GT and predictions (NaN, dropped from
the averages), a class absent from GT but predicted (0), group regions (instanceId = labelId).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from segrepro.cli import main
from segrepro.errors import UserError
from segrepro.evaluation.bench import max_difference, official_evaluator, official_folder_result, write_synthetic_set
from segrepro.evaluation.cityscapes_metrics import (
    CityscapesEvaluator,
    evaluate_cityscapes_folders,
    find_cityscapes_pairs,
)

WALL, BUS, TRAIN, CAR, CARAVAN = 12, 28, 31, 26, 29
GT_IDS = [i for i in range(34) if i not in (WALL, BUS, TRAIN)]
INSTANCE_IDS = [24, 25, 26, 27, 29, 30, 32, 33]  # caravan/trailer instances, no bus/train
PRED_IDS = [i for i in range(34) if i not in (WALL, BUS)]  # train predicted without GT → IoU 0
TOL = 1e-9


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cs_eval")
    gt_root, pred_root = write_synthetic_set(root, 5, 96, 192, seed=3, compress_level=1, block=16, n_instances=12,
                                             error_block=8, gt_ids=GT_IDS, instance_ids=INSTANCE_IDS,
                                             pred_ids=PRED_IDS)
    # Predict caravan on half of every car instance of the first image: a vehicle-category hit, a car miss.
    pred_path, _, inst_path = find_cityscapes_pairs(gt_root, pred_root)[0]
    pred, inst = np.array(Image.open(pred_path)), np.array(Image.open(inst_path))
    car = (inst // 1000 == CAR) & (np.arange(pred.shape[1]) % 2 == 0)
    assert car.any()
    pred[car] = CARAVAN
    Image.fromarray(pred).save(pred_path)
    return gt_root, pred_root


@pytest.fixture()
def official() -> Iterator[ModuleType]:
    with official_evaluator() as ev:  # the bench's own set-up: quiet, nIoU on, np.in1d aliased while inside
        yield ev


@pytest.fixture()
def expected(official: ModuleType, dataset: tuple[Path, Path]) -> dict:
    return official_folder_result(official, *dataset)


def decoded(dataset: tuple[Path, Path]) -> list[tuple[np.ndarray, ...]]:
    return [tuple(np.array(Image.open(p)) for p in pair) for pair in find_cityscapes_pairs(*dataset)]


def test_edge_cases_are_exercised(expected: dict) -> None:
    assert math.isnan(expected["classScores"]["wall"]) and math.isnan(expected["classInstScores"]["bus"])
    assert expected["classScores"]["train"] == 0.0 and expected["classInstScores"]["train"] == 0.0
    conf = np.asarray(expected["confMatrix"])
    evaluated = np.array([not id2label[i].ignoreInEval for i in range(34)])
    assert conf[CAR, CARAVAN] > 0  # caravan predicted on cars
    assert conf[np.ix_(evaluated, ~evaluated)].sum() > 0  # ignored ids predicted on evaluated GT: FN
    assert not math.isnan(expected["categoryInstScores"]["vehicle"])


@pytest.mark.parametrize("fused", [True, False], ids=["fused-numba", "torch-bincount"])
def test_in_memory_updates_equal_official(expected: dict, dataset: tuple[Path, Path], fused: bool) -> None:
    arrays = decoded(dataset)
    before = [tuple(a.copy() for a in triple) for triple in arrays]
    one_by_one = CityscapesEvaluator(fused=fused)
    for pred, gt, inst in arrays:
        one_by_one.update(pred, gt, inst)
    assert all(np.array_equal(a, b) for t, u in zip(arrays, before) for a, b in zip(t, u))  # inputs untouched
    # Two "processes" on disjoint shards, one fed a batch (B, H, W) of tensors, merged by summing state.
    first, second = CityscapesEvaluator(fused=fused), CityscapesEvaluator(fused=fused)
    first.update(*arrays[0])
    second.update(*(torch.from_numpy(np.stack([a[i] for a in arrays[1:]])) for i in range(3)))
    merged = first.merge(second)
    wide = CityscapesEvaluator(fused=fused)  # 16-bit prediction PNGs and int64 instance maps decode to wider types
    for pred, gt, inst in arrays:
        wide.update(pred.astype(np.uint16), gt, inst.astype(np.int64))
    for acc in (one_by_one, merged, wide):
        result = acc.compute()
        assert max_difference(expected, result.official_dict()) <= TOL
        assert result.extras["num_images"] == len(arrays)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-numba", "torch-bincount"])
def test_out_of_range_ids_are_refused_before_counting(fused: bool) -> None:
    acc = CityscapesEvaluator(fused=fused)
    gt, inst = np.full((4, 6), 7, np.uint8), np.full((4, 6), 7, np.int32)
    bad_pred = gt.copy()
    bad_pred[3, 5] = 255
    with pytest.raises(ValueError, match="prediction holds id 255.*trainIds"):
        acc.update(bad_pred, gt, inst)
    with pytest.raises(ValueError, match="ground truth holds id -1"):
        acc.update(gt.astype(np.int64), np.where(inst > 0, -1, 0), inst)
    for value, needle in ((34000, "encodes labelId 34"), (-5, "-5")):
        wrong = inst.copy()
        wrong[0, 0] = value
        with pytest.raises(ValueError, match=needle):
            acc.update(gt, gt, wrong)
    with pytest.raises(ValueError, match="differs from prediction"):
        acc.update(gt, gt[:, :-1], None)
    assert all(int(v.abs().sum()) == 0 for v in acc.state.values())  # nothing counted from refused input


def test_folder_evaluation_equals_official_and_in_memory(expected: dict, dataset: tuple[Path, Path]) -> None:
    serial = evaluate_cityscapes_folders(*dataset, workers=0, progress=False).official_dict()
    parallel = evaluate_cityscapes_folders(*dataset, workers=2, progress=False).official_dict()
    assert max_difference(expected, serial) <= TOL
    assert max_difference(serial, parallel) == 0.0
    for field in ("priors", "labels"):
        assert serial[field].keys() == expected[field].keys()
        assert all(abs(serial[field][k] - expected[field][k]) <= TOL for k in expected[field])


def test_cli_json_and_table(expected: dict, dataset: tuple[Path, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res" / "cityscapes.json"
    gt_root, pred_root = dataset
    with pytest.raises(SystemExit) as exc:
        main(["metrics", "cityscapes", "--gt-root", str(gt_root), "--pred-root", str(pred_root), "--json", str(out)])
    assert exc.value.code in (0, None)
    written = json.loads(out.read_text())
    assert max_difference(expected, written) <= TOL
    assert written["segrepro"]["num_images"] == 5 and "class_counts" in written["segrepro"]
    assert [p.name for p in out.parent.iterdir()] == ["cityscapes.json"]  # no temp file left
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split() == ["classes", "IoU", "nIoU"] and "categories       IoU      nIoU" in lines
    assert sum(line.startswith("Score Average : ") for line in lines) == 2
    road = next(line for line in lines if line.startswith("road "))
    assert road == f"{'road':<14}: {expected['classScores']['road']:>5.3f}    {float('nan'):>5.3f}"


def _run_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    message = err[err.index("error: "):].strip()
    assert "Traceback" not in err and len(message.splitlines()) == 1
    return message


def test_missing_duplicate_and_bad_predictions(dataset: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    gt_root, pred_root = dataset
    pairs = find_cityscapes_pairs(gt_root, pred_root)
    preds = tmp_path / "preds"
    for pred, _, _ in pairs[1:]:
        (preds / pred.parent.name).mkdir(parents=True, exist_ok=True)
        (preds / pred.parent.name / pred.name).write_bytes(pred.read_bytes())
    argv = ["metrics", "cityscapes", "--gt-root", str(gt_root), "--pred-root", str(preds), "--workers", "0"]
    assert "no prediction for" in _run_error(argv, capsys) and pairs[0][1].name in _run_error(argv, capsys)

    first = pairs[0][0]
    (preds / first.name).write_bytes(first.read_bytes())
    (preds / "nested").mkdir()
    (preds / "nested" / first.name.replace("leftImg8bit", "color")).write_bytes(first.read_bytes())
    assert "several predictions" in _run_error(argv, capsys)

    (preds / "nested" / first.name.replace("leftImg8bit", "color")).unlink()
    trainids = np.array(Image.open(first))
    trainids[0, 0] = 255
    Image.fromarray(trainids).save(preds / first.name)
    message = _run_error([*argv[:-1], "2"], capsys)  # raised in a decode worker, reported the same way
    assert first.name in message and "255" in message

    Image.fromarray(trainids[:, :-2] % 34).save(preds / first.name)
    assert "must have the GT size" in _run_error(argv, capsys)
    with pytest.raises(UserError, match="no ground truth"):
        find_cityscapes_pairs(tmp_path, preds)
