"""Cityscapes pixel-level metrics, equal to cityscapesscripts' ``evalPixelLevelSemanticLabeling``.

The official script builds a 34×34 labelId confusion matrix and loops over instances with one full-image
mask each. Here both come from one histogram pass: on CPU a fused numba loop (:mod:`.cityscapes_counts`),
on other devices a ``bincount`` over ``gt*34+pred`` plus one over (instance id, predicted id among
24..33). Only the per-instance rows (a few dozen) are touched afterwards. The formulas
(reference/cityscapes_eval_and_submission.md §1) are applied to the accumulated sums in
:meth:`CityscapesEvaluator.compute`.
Edge cases kept on purpose: ignored-id predictions are FN, FP counts only non-ignored GT rows, NaN scores
leave the averages, vehicle iIoU predictions include caravan/trailer, weights are avgClassSize/size.
Instance ids whose class has no instances or is unknown (which crash the official script) are skipped.
"""

from __future__ import annotations

import bisect
import json
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from segrepro.errors import UserError
from segrepro.evaluation.basics import nanmean
from segrepro.evaluation.cityscapes_counts import (
    CATEGORY_NAMES,
    LABEL_NAMES,
    TABLES,
    N,
    device_histograms,
    fused_histograms,
    instance_terms,
)
from segrepro.io import atomic_write_text

if TYPE_CHECKING:  # torch is imported where tensors are used: the PNG-folder path runs without it
    import torch

# The accumulator's entries: shape and whether they hold float64 weights (else int64 counts).
STATE_SPEC: dict[str, tuple[tuple[int, ...], bool]] = {
    "conf": ((N, N), False),
    "inst_count": ((N,), False),
    "inst_tp": ((N,), False),
    "inst_fn": ((N,), False),
    "inst_tp_w": ((N,), True),
    "inst_fn_w": ((N,), True),
    "cat_tp_w": ((len(CATEGORY_NAMES),), True),
    "cat_fn_w": ((len(CATEGORY_NAMES),), True),
    "images": ((), False),
}


def zero_state() -> dict[str, np.ndarray]:
    """An empty accumulator state as numpy arrays (what workers send back and the folder path sums)."""
    return {k: np.zeros(shape, dtype=np.float64 if weights else np.int64) for k, (shape, weights) in STATE_SPEC.items()}


def image_state(pred: np.ndarray, gt: np.ndarray, inst: np.ndarray | None) -> dict[str, np.ndarray]:
    """One image's additions to the state on CPU (one fused numba pass); ValueError for ids outside 0..33."""
    conf, ids, hist = fused_histograms(pred, gt, inst)
    state = zero_state()
    state["conf"] += conf
    if len(ids):
        for key, value in instance_terms(ids, hist).items():
            state[key] += value.astype(state[key].dtype)
    state["images"] += 1
    return state


def _score(tp: float, fp: float, fn: float) -> float:
    """tp / (tp + fp + fn) in the official summation order; NaN for an empty denominator."""
    denom = tp + fp + fn
    return float(tp) / denom if denom != 0 else float("nan")


@dataclass
class CityscapesResult:
    """Final scores keyed like the official JSON (label / category names; NaN where not defined)."""

    class_scores: dict[str, float]
    class_inst_scores: dict[str, float]
    category_scores: dict[str, float]
    category_inst_scores: dict[str, float]
    conf_matrix: np.ndarray
    extras: dict = field(default_factory=dict)

    @property
    def average_scores(self) -> dict[str, float]:
        return {
            "averageScoreClasses": nanmean(np.array(list(self.class_scores.values()))),
            "averageScoreInstClasses": nanmean(np.array(list(self.class_inst_scores.values()))),
            "averageScoreCategories": nanmean(np.array(list(self.category_scores.values()))),
            "averageScoreInstCategories": nanmean(np.array(list(self.category_inst_scores.values()))),
        }

    def official_dict(self) -> dict:
        """The fields of cityscapesscripts' result dict / JSON, same names and values."""
        total = int(self.conf_matrix.sum())
        return {
            "confMatrix": self.conf_matrix.tolist(),
            "priors": {LABEL_NAMES[i]: float(self.conf_matrix[i].sum()) / total for i in range(N)},
            "labels": {LABEL_NAMES[i]: i for i in range(N)},
            "classScores": dict(self.class_scores),
            "classInstScores": dict(self.class_inst_scores),
            "categoryScores": dict(self.category_scores),
            "categoryInstScores": dict(self.category_inst_scores),
            **self.average_scores,
        }

    def to_json_dict(self) -> dict:
        """Official fields plus segrepro's own counts under ``"segrepro"`` (never mixed in)."""
        return {**self.official_dict(), "segrepro": self.extras}

    def table(self) -> str:
        """The official printed layout: classes (IoU, nIoU), then categories, each with "Score Average"."""
        avg = self.average_scores
        rule = "-" * 32
        lines = ["classes          IoU      nIoU", rule]
        for i in range(N):
            if TABLES["evaluated"][i]:
                name = LABEL_NAMES[i]
                lines.append(f"{name:<14}: {self.class_scores[name]:>5.3f}    {self.class_inst_scores[name]:>5.3f}")
        lines += [
            rule,
            f"Score Average : {avg['averageScoreClasses']:5.3f}    {avg['averageScoreInstClasses']:5.3f}",
            rule,
            "",
            "categories       IoU      nIoU",
            rule,
        ]
        for k, cat in enumerate(CATEGORY_NAMES):
            if TABLES["cat_iou"][k].any():
                lines.append(f"{cat:<14}: {self.category_scores[cat]:>5.3f}    {self.category_inst_scores[cat]:>5.3f}")
        lines += [
            rule,
            f"Score Average : {avg['averageScoreCategories']:5.3f}    {avg['averageScoreInstCategories']:5.3f}",
            rule,
        ]
        return "\n".join(lines)


class CityscapesEvaluator:
    """Accumulator: :meth:`update` per image (or batch), :meth:`merge` across processes, :meth:`compute` once.

    All state is in :attr:`state` (tensors on one device), so a distributed run can ``all_reduce`` each
    entry with SUM and call :meth:`compute` anywhere.
    """

    def __init__(self, device: torch.device | str = "cpu", fused: bool | None = None) -> None:
        import torch

        self.device = torch.device(device)
        self.fused = self.device.type == "cpu" if fused is None else fused
        if self.fused and self.device.type != "cpu":
            raise ValueError("the fused numba pass runs on CPU; use fused=False for device tensors")
        self.state: dict[str, torch.Tensor] = {k: torch.from_numpy(v).to(self.device) for k, v in zero_state().items()}

    def update(
        self,
        pred_label_ids: torch.Tensor | np.ndarray,
        gt_label_ids: torch.Tensor | np.ndarray,
        gt_instance_ids: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add images of labelIds (``(H, W)`` or ``(B, H, W)``); instanceIds enable the iIoU terms.

        On CPU one fused numba pass per image (:mod:`.cityscapes_counts`); elsewhere ``bincount`` on the
        device. Raises ValueError for shapes that differ or ids outside 0..33 (the official script crashes).
        """
        import torch

        from segrepro.evaluation.confusion import as_tensor

        maps: dict[str, Any] = {
            "prediction": pred_label_ids,
            "ground truth": gt_label_ids,
            "instance map": gt_instance_ids,
        }
        maps = {k: v for k, v in maps.items() if v is not None}
        shape = tuple(pred_label_ids.shape)
        for what, m in maps.items():
            if tuple(m.shape) != shape:
                raise ValueError(f"{what} size {tuple(m.shape)} differs from prediction {shape}")
        arrays: list[Any]
        count: Callable[..., tuple[Any, np.ndarray, np.ndarray]]
        if self.fused:
            arrays, count = [_as_numpy(m) for m in maps.values()], fused_histograms
        else:
            arrays, count = [as_tensor(m, self.device) for m in maps.values()], device_histograms
        if len(arrays) == 2:  # no instance map: the whole batch in one pass
            counts = [count(arrays[0], arrays[1], None)]
        else:  # instance ids are per image: one pass each, so equal ids in a batch stay apart
            counts = [count(p, g, i) for p, g, i in zip(*(a.reshape(-1, *shape[-2:]) for a in arrays), strict=True)]
        # Every image is counted (and validated) before anything is added: refused input changes nothing.
        for conf, ids, hist in counts:
            self.state["conf"] += as_tensor(conf, self.device)
            if len(ids):
                for key, value in instance_terms(ids, hist).items():
                    self.state[key] += torch.as_tensor(value, device=self.device).to(self.state[key].dtype)
        self.state["images"] += 1 if len(shape) == 2 else shape[0]

    def merge(self, other: CityscapesEvaluator | dict[str, torch.Tensor | np.ndarray]) -> CityscapesEvaluator:
        """In-place sum of another accumulator or its :attr:`state` (another process, shard or worker)."""
        from segrepro.evaluation.confusion import as_tensor

        state = other.state if isinstance(other, CityscapesEvaluator) else other
        for k, v in state.items():
            self.state[k] += as_tensor(v, self.device)
        return self

    def compute(self) -> CityscapesResult:
        return scores_from_state({k: v.cpu().numpy() for k, v in self.state.items()})


def scores_from_state(s: Mapping[str, np.ndarray]) -> CityscapesResult:
    """The official formulas applied to an accumulated state (numpy arrays keyed as :data:`STATE_SPEC`)."""
    conf = s["conf"]
    ev = TABLES["evaluated"]
    tp = np.diagonal(conf)
    fn = conf.sum(1) - tp
    fp = conf[ev].sum(0) - np.where(ev, tp, 0)  # GT rows of non-ignored labels other than c
    class_scores, class_inst = {}, {}
    for i, name in enumerate(LABEL_NAMES):
        class_scores[name] = _score(float(tp[i]), int(fp[i]), int(fn[i])) if ev[i] else float("nan")
        class_inst[name] = (
            _score(s["inst_tp_w"][i], int(fp[i]), s["inst_fn_w"][i]) if TABLES["inst_class"][i] else float("nan")
        )
    cat_scores, cat_inst = {}, {}
    for k, cat in enumerate(CATEGORY_NAMES):
        others = ev & (TABLES["cat_of"] != k)  # non-ignored GT rows outside the category
        ids = TABLES["cat_iou"][k]
        if ids.any():
            c_tp = int(conf[np.ix_(ids, ids)].sum())
            cat_scores[cat] = _score(float(c_tp), int(conf[np.ix_(others, ids)].sum()), int(conf[ids].sum()) - c_tp)
        else:
            cat_scores[cat] = float("nan")
        ids = TABLES["cat_inst"][k]
        cat_inst[cat] = (
            _score(s["cat_tp_w"][k], int(conf[np.ix_(others, ids)].sum()), s["cat_fn_w"][k])
            if ids.any()
            else float("nan")
        )
    extras = {
        "num_images": int(s["images"]),
        "num_pixels": int(conf.sum()),
        "class_counts": {
            LABEL_NAMES[i]: {"tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i])} for i in range(N) if ev[i]
        },
        "instance_counts": {
            LABEL_NAMES[i]: {
                "instances": int(s["inst_count"][i]),
                "tp": int(s["inst_tp"][i]),
                "fn": int(s["inst_fn"][i]),
            }
            for i in range(N)
            if TABLES["inst_class"][i]
        },
    }
    return CityscapesResult(class_scores, class_inst, cat_scores, cat_inst, conf.copy(), extras)


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


# --- PNG folders in the official layout -------------------------------------------------------------


def find_cityscapes_pairs(gt_root: Path, pred_root: Path, split: str = "val") -> list[tuple[Path, Path, Path]]:
    """(prediction, labelIds GT, instanceIds GT) per GT image, matched as the official ``getPrediction`` does.

    GT: ``gt_root/gtFine/<split>/<city>/*_gtFine_labelIds.png``. A prediction is any ``<city>_<seq>_<frame>*.png``
    anywhere under ``pred_root``; none or several for one GT image is a UserError naming the file.
    """
    gt_files = sorted((Path(gt_root) / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
    if not gt_files:
        raise UserError(
            f"no ground truth under {Path(gt_root) / 'gtFine' / split}/<city>/*_gtFine_labelIds.png; "
            "point --gt-root at the folder that holds gtFine/"
        )
    if not Path(pred_root).is_dir():
        raise UserError(f"prediction folder {pred_root} does not exist")
    preds = sorted((p.name, p) for p in Path(pred_root).rglob("*.png"))
    names = [n for n, _ in preds]
    pairs = []
    for gt in gt_files:
        key = "_".join(gt.name.split("_")[:3])  # <city>_<seq>_<frame>, the official pattern without '*.png'
        lo = bisect.bisect_left(names, key)
        hi = bisect.bisect_left(names, key + "\U0010ffff")
        if hi == lo:
            raise UserError(f"no prediction for {gt}: expected a file {key}*.png under {pred_root}")
        if hi - lo > 1:
            raise UserError(f"several predictions for {gt}: {preds[lo][1]} and {preds[lo + 1][1]} (keep one)")
        inst = gt.with_name(gt.name.replace("labelIds", "instanceIds"))
        pairs.append((preds[lo][1], gt, inst))
    return pairs


def _read_png(path: Path) -> np.ndarray:
    """Decode once, with the fast decoder for the plain layouts (Pillow otherwise)."""
    from segrepro.data.png import read_png_array

    try:
        arr, _ = read_png_array(path)
    except (OSError, ValueError, SyntaxError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if arr.ndim != 2:
        raise UserError(f"{path} has {arr.shape[2]} channels; predictions must be single-channel labelId PNGs")
    return arr


def _evaluate_pair(pair: tuple[Path, Path, Path]) -> dict[str, np.ndarray]:
    """Decode and count one image (in a worker); only the small numpy state travels back."""
    pred_path, gt_path, inst_path = pair
    pred, gt, inst = _read_png(pred_path), _read_png(gt_path), _read_png(inst_path)
    for path, arr in ((gt_path, gt), (inst_path, inst)):
        if arr.shape != pred.shape:
            raise UserError(
                f"{pred_path} is {pred.shape[1]}x{pred.shape[0]} but {path} is "
                f"{arr.shape[1]}x{arr.shape[0]}; predictions must have the GT size"
            )
    try:
        return image_state(pred, gt, inst)
    except ValueError as err:
        raise UserError(f"{pred_path} (ground truth {gt_path.name}): {err}") from None


def evaluate_cityscapes_folders(
    gt_root: Path, pred_root: Path, split: str = "val", workers: int | None = None, progress: bool = True
) -> CityscapesResult:
    """The official evaluator's numbers for a folder of labelId PNGs, decoding in ``workers`` processes
    (default: every core; 0 decodes in this process). Needs neither torch nor a GPU."""
    pairs = find_cityscapes_pairs(gt_root, pred_root, split)
    workers = (os.cpu_count() or 1) if workers is None else workers
    state = zero_state()
    bar = tqdm(total=len(pairs), desc="cityscapes metrics", unit="img", disable=not progress)
    pool = None
    if workers > 0 and len(pairs) > 1:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        pool = ProcessPoolExecutor(max_workers=min(workers, len(pairs)), mp_context=ctx)
    try:
        chunk = max(1, min(16, len(pairs) // (4 * max(workers, 1))))
        for image in pool.map(_evaluate_pair, pairs, chunksize=chunk) if pool else map(_evaluate_pair, pairs):
            for k, v in image.items():
                state[k] += v
            bar.update(1)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    bar.close()
    result = scores_from_state(state)
    result.extras.update({"gt_root": str(gt_root), "pred_root": str(pred_root), "split": split})
    return result


def write_result_json(result: CityscapesResult, path: Path) -> None:
    """Official field names plus the ``segrepro`` extras, written atomically (NaN as the official JSON has it)."""
    atomic_write_text(path, json.dumps(result.to_json_dict(), indent=2, sort_keys=True) + "\n")
