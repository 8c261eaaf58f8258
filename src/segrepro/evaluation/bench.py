"""``segrepro bench eval`` (metric half): segrepro's Cityscapes metrics against cityscapesscripts' evaluator.

Two figures, each on the same data with the values checked equal:
* per image, in memory: :meth:`CityscapesEvaluator.update` on decoded arrays vs the official
  ``evaluatePair`` with ``Image.open`` served from already-decoded images (neither side decodes);
* end to end on a PNG folder: :func:`evaluate_cityscapes_folders` (parallel decode) vs
  ``getPrediction`` + ``evaluateImgLists``, decoding included on both sides.
The official evaluator calls ``np.in1d`` (gone in NumPy ≥ 2.4): :func:`official_evaluator` puts an alias
back only while the official code runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

from segrepro.errors import UserError
from segrepro.evaluation.cityscapes_metrics import (
    CityscapesEvaluator,
    evaluate_cityscapes_folders,
    find_cityscapes_pairs,
)
from segrepro.machine import describe

CITIES = ("frankfurt", "lindau", "munster")
SCORE_FIELDS = ("classScores", "classInstScores", "categoryScores", "categoryInstScores")
AVERAGE_FIELDS = (
    "averageScoreClasses",
    "averageScoreInstClasses",
    "averageScoreCategories",
    "averageScoreInstCategories",
)


def synthetic_pair(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    block: int = 64,
    n_instances: int = 30,
    gt_ids: Sequence[int] = range(34),
    instance_ids: Sequence[int] = range(24, 34),
    pred_ids: Sequence[int] = range(34),
    error_fraction: float = 0.25,
    error_block: int = 32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred labelIds, GT labelIds, GT instanceIds) as in reference §4: blocky GT over ``gt_ids``, instance
    rectangles ``labelId*1000+k`` (other pixels keep their labelId, so 24..33 outside them are group
    regions), and a prediction equal to the GT except for random blocks drawn from ``pred_ids``."""

    def blocks(values: np.ndarray, size: int) -> np.ndarray:
        grid = values[rng.integers(0, len(values), size=(-(-height // size), -(-width // size)))]
        return np.kron(grid, np.ones((size, size), dtype=grid.dtype))[:height, :width]

    gt = blocks(np.asarray(gt_ids, dtype=np.uint8), block)
    inst = gt.astype(np.uint16)
    for k in range(n_instances):
        cls = int(rng.choice(np.asarray(instance_ids)))
        h, w = int(rng.integers(2, max(3, height // 4))), int(rng.integers(2, max(3, width // 4)))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        gt[y : y + h, x : x + w] = cls
        inst[y : y + h, x : x + w] = cls * 1000 + k
    wrong = blocks(np.arange(100), error_block) < 100 * error_fraction
    pred = np.where(wrong, blocks(np.asarray(pred_ids, dtype=np.uint8), error_block), gt)
    return pred, gt, inst


def write_synthetic_set(
    root: Path, n_images: int, height: int, width: int, seed: int = 0, compress_level: int = 6, **pair_kwargs
) -> tuple[Path, Path]:
    """Write ``n_images`` synthetic pairs in the official layout; returns (gt_root, pred_root).

    GT: ``root/gtFine/val/<city>/<stem>_gtFine_{labelIds,instanceIds}.png``; predictions:
    ``root/results/<city>/<stem>_leftImg8bit.png``.
    """
    rng = np.random.default_rng(seed)
    root, pred_root = Path(root), Path(root) / "results"
    for i in range(n_images):
        city = CITIES[i % len(CITIES)]
        stem = f"{city}_{i:06d}_000019"
        pred, gt, inst = synthetic_pair(rng, height, width, **pair_kwargs)
        gt_dir, pred_dir = root / "gtFine" / "val" / city, pred_root / city
        gt_dir.mkdir(parents=True, exist_ok=True)
        pred_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(gt_dir / f"{stem}_gtFine_labelIds.png", compress_level=compress_level)
        Image.fromarray(inst).save(gt_dir / f"{stem}_gtFine_instanceIds.png", compress_level=compress_level)
        Image.fromarray(pred).save(pred_dir / f"{stem}_leftImg8bit.png", compress_level=compress_level)
    return root, pred_root


def _in1d(a: Any, b: Any, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    return np.isin(np.ravel(a), b, assume_unique=assume_unique, invert=invert)


@contextlib.contextmanager
def official_evaluator() -> Iterator[ModuleType]:
    """cityscapesscripts' evaluator module, quiet, no JSON, nIoU on, with ``np.in1d`` present while inside."""
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as ev

    added = not hasattr(np, "in1d")
    if added:
        setattr(np, "in1d", _in1d)  # noqa: B010 - NumPy 2.4 removed it; mypy knows it is gone
    keys = ("quiet", "JSONOutput", "evalInstLevelScore", "evalPixelAccuracy", "predictionPath", "predictionWalk")
    saved = {k: getattr(ev.args, k) for k in keys}
    ev.args.quiet, ev.args.JSONOutput, ev.args.evalInstLevelScore, ev.args.evalPixelAccuracy = True, False, True, False
    try:
        yield ev
    finally:
        for k, v in saved.items():
            setattr(ev.args, k, v)
        if added:
            delattr(np, "in1d")


def official_folder_result(ev: ModuleType, gt_root: Path, pred_root: Path, split: str = "val") -> dict:
    """The official flow: GT glob, ``getPrediction`` per GT file, ``evaluateImgLists``."""
    gt_list = sorted(str(p) for p in (Path(gt_root) / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
    ev.args.predictionPath, ev.args.predictionWalk = str(pred_root), None
    pred_list = [ev.getPrediction(ev.args, g) for g in gt_list]
    return ev.evaluateImgLists(pred_list, gt_list, ev.args)


def max_difference(official: dict, ours: dict) -> float:
    """Largest absolute difference over every score and average; inf if NaN patterns or matrices differ."""
    if not np.array_equal(np.asarray(official["confMatrix"], dtype=np.int64), np.asarray(ours["confMatrix"])):
        return math.inf
    pairs = [(official[f][k], ours[f][k]) for f in SCORE_FIELDS for k in official[f]]
    pairs += [(official[f], ours[f]) for f in AVERAGE_FIELDS]
    worst = 0.0
    for a, b in pairs:
        if math.isnan(a) != math.isnan(b):
            return math.inf
        if not math.isnan(a):
            worst = max(worst, abs(a - b))
    return worst


class _DecodedImages:
    """Stands in for ``PIL.Image`` inside the official module: ``open`` returns an already-decoded image."""

    def __init__(self, images: dict[str, Image.Image]) -> None:
        self.images = images

    def open(self, path: str) -> Image.Image:
        return self.images[str(path)]


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``repeats`` calls; CPU time is the steadier figure on a shared machine."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def machine() -> str:
    """The machine line (:func:`segrepro.machine.describe`) and numpy's version, for the benchmark table."""
    return f"{describe()}, numpy {np.__version__}"


def bench_eval(
    work_dir: Path,
    n_images: int = 20,
    height: int = 1024,
    width: int = 2048,
    repeats: int = 3,
    workers: int = 2,
    seed: int = 0,
) -> dict:
    """Time both comparisons and check the values; returns the figures (seconds, speed-ups, max diff)."""
    gt_root, pred_root = write_synthetic_set(Path(work_dir), n_images, height, width, seed)
    pairs = find_cityscapes_pairs(gt_root, pred_root)
    images: dict[str, Image.Image] = {str(p): Image.open(p) for pair in pairs for p in pair}
    for img in images.values():
        img.load()
    arrays = [tuple(np.array(images[str(p)]) for p in pair) for pair in pairs]

    def ours_in_memory() -> CityscapesEvaluator:
        acc = CityscapesEvaluator()
        for pred, gt, inst in arrays:
            acc.update(pred, gt, inst)
        return acc

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the official code is single-threaded: compare one core with one core
    try:
        with official_evaluator() as ev:
            real_image = getattr(ev, "Image")  # noqa: B009 - the module's PIL.Image, swapped for decoded images
            try:
                setattr(ev, "Image", _DecodedImages(images))  # noqa: B010
                conf, stats = ev.generateMatrix(ev.args), ev.generateInstanceStats(ev.args)

                def official_in_memory() -> None:
                    for pred, gt, _ in pairs:
                        ev.evaluatePair(str(pred), str(gt), conf, stats, {}, ev.args)

                official_img = _median_time(official_in_memory, repeats)
            finally:
                setattr(ev, "Image", real_image)  # noqa: B010
            official_files = _median_time(official_in_memory, repeats)  # as shipped: it reads its 3 PNGs
            ours_in_memory()  # untimed warm-up: loads (or compiles) the numba kernel
            ours_img = _median_time(ours_in_memory, repeats)
            # conf has accumulated every official call: 2 * repeats passes over the set.
            same_matrix = np.array_equal(conf, 2 * repeats * ours_in_memory().state["conf"].numpy())
            official = official_folder_result(ev, gt_root, pred_root)
            official_e2e = _median_time(lambda: official_folder_result(ev, gt_root, pred_root), repeats)
    finally:
        torch.set_num_threads(threads)
    ours = evaluate_cityscapes_folders(gt_root, pred_root, workers=workers, progress=False)
    ours_e2e = _median_time(
        lambda: evaluate_cityscapes_folders(gt_root, pred_root, workers=workers, progress=False), repeats
    )
    return {
        "machine": machine(),
        "load_average": os.getloadavg()[0],
        "images": n_images,
        "size": f"{width}x{height}",
        "repeats": repeats,
        "workers": workers,
        "per_image_official_s": official_img[0] / n_images,
        "per_image_ours_s": ours_img[0] / n_images,
        "per_image_official_cpu_s": official_img[1] / n_images,
        "per_image_ours_cpu_s": ours_img[1] / n_images,
        "per_image_speedup": official_img[0] / ours_img[0],
        "per_image_cpu_speedup": official_img[1] / ours_img[1],
        "per_image_official_with_decode_s": official_files[0] / n_images,
        "per_image_with_decode_speedup": official_files[0] / ours_img[0],
        "end_to_end_official_s": official_e2e[0],
        "end_to_end_ours_s": ours_e2e[0],
        "end_to_end_speedup": official_e2e[0] / ours_e2e[0],
        "in_memory_confusion_equal": bool(same_matrix),
        "max_abs_difference": max_difference(official, ours.official_dict()),
        "mIoU": ours.average_scores["averageScoreClasses"],
    }


def markdown(figures: dict) -> str:
    """The docs/benchmarks.md rows for one run."""
    f = figures
    return "\n".join(
        [
            f"Machine: {f['machine']}; 1-minute load average {f['load_average']:.1f} while measuring. "
            f"Data: {f['images']} synthetic pairs of {f['size']} (reference §4 recipe), median of {f['repeats']} runs.",
            "",
            "| comparison | cityscapesscripts 2.3.0 | segrepro | speed-up |",
            "|---|---|---|---|",
            f"| per-image update on decoded arrays, wall (1 thread each) | {f['per_image_official_s'] * 1e3:.1f} ms "
            f"| {f['per_image_ours_s'] * 1e3:.2f} ms | {f['per_image_speedup']:.1f}× |",
            f"| per-image update on decoded arrays, CPU time | {f['per_image_official_cpu_s'] * 1e3:.1f} ms "
            f"| {f['per_image_ours_cpu_s'] * 1e3:.2f} ms | {f['per_image_cpu_speedup']:.1f}× |",
            f"| official `evaluatePair` as shipped (reads its 3 PNGs) vs our update on decoded arrays, wall "
            f"| {f['per_image_official_with_decode_s'] * 1e3:.1f} ms | {f['per_image_ours_s'] * 1e3:.2f} ms "
            f"| {f['per_image_with_decode_speedup']:.1f}× |",
            f"| end to end on the PNG folder, decoding included ({f['workers']} decode workers), wall "
            f"| {f['end_to_end_official_s']:.2f} s | {f['end_to_end_ours_s']:.2f} s | {f['end_to_end_speedup']:.1f}× |",
            "",
            f"Values: confusion matrices equal: {f['in_memory_confusion_equal']}; largest absolute difference over all "
            f"class/category IoU, iIoU and averages: {f['max_abs_difference']:.1e} (mIoU {f['mIoU']:.5f}).",
        ]
    )


# -- inference half: img/s per protocol -------------------------------------------------------------


def bench_inference(
    methods: Sequence[str],
    variant: str,
    device: str,
    height: int,
    width: int,
    protocols: Sequence[str] = ("official", "ss", "ms-flip"),
    repeats: int = 2,
    tile_batch: int = 4,
) -> list[dict]:
    """Images/s of :func:`predict_classes` per method and protocol on one random image (one untimed warm-up).

    CPU: tiny variants at a small size, where tiles larger than the image degrade to whole-image passes;
    CUDA: the official variants at 1024×2048 (bf16 autocast), synchronised before each clock read.
    """
    from segrepro.evaluation.inference import predict_classes, resolve_protocol
    from segrepro.models import build, get_card

    dev = torch.device(device)
    image = torch.randn(3, height, width, generator=torch.Generator().manual_seed(0)).to(dev)
    rows = []
    for method in methods:
        model = build(method, variant=variant, num_classes=19).eval().to(dev)
        for name in protocols:
            proto = resolve_protocol(get_card(method).eval_protocols, name, "test")

            def once(model: torch.nn.Module = model, proto: Any = proto) -> None:  # bound now: `del model` below
                predict_classes(model, image, proto, tile_batch)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)

            once()
            wall, _ = _median_time(once, repeats)
            rows.append(
                {
                    "method": method,
                    "variant": variant,
                    "protocol": proto.describe(),
                    "size": f"{width}x{height}",
                    "device": device,
                    "img_per_s": 1.0 / wall,
                }
            )
        del model
    return rows


def markdown_inference(rows: list[dict]) -> str:
    lines = ["| method | variant | protocol | size | device | img/s |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['method']} | {r['variant']} | {r['protocol']} | {r['size']} | {r['device']} | {r['img_per_s']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


# -- end to end on a folder of pairs, as a user runs it -----------------------------------------------


def replicate_val_pairs(src_root: Path, dst: Path, n_images: int, seed: int = 0) -> tuple[Path, Path]:
    """``n_images`` val pairs under new names, cycling through ``src_root``'s gtFine/val (e.g. a stand-in).

    GT files are copied byte for byte; each source's prediction is its labelIds with a quarter of 32-px
    blocks replaced by random labelIds, written once and copied for every replica. Returns (gt_root, pred_root).
    """
    import shutil

    sources = sorted((Path(src_root) / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    if not sources:
        raise UserError(f"{src_root}: no gtFine/val/<city>/*_gtFine_labelIds.png to replicate")
    rng = np.random.default_rng(seed)
    dst = Path(dst)
    preds = []
    for k, src in enumerate(sources):
        with Image.open(src) as im:
            gt = np.array(im)
        h, w = gt.shape
        blocks = rng.random((-(-h // 32), -(-w // 32))) < 0.25
        wrong = np.kron(blocks, np.ones((32, 32), dtype=bool))[:h, :w]
        noise = np.kron(rng.integers(0, 34, size=blocks.shape), np.ones((32, 32), dtype=np.int64))[:h, :w]
        path = dst / "pred_sources" / f"{k:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(wrong, noise, gt).astype(np.uint8)).save(path, compress_level=6)
        preds.append(path)
    for i in range(n_images):
        src = sources[i % len(sources)]
        city = src.parent.name
        stem = f"{city}_{i:06d}_000019"
        gt_dir, pred_dir = dst / "gtFine" / "val" / city, dst / "results" / city
        gt_dir.mkdir(parents=True, exist_ok=True)
        pred_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, gt_dir / f"{stem}_gtFine_labelIds.png")
        inst = src.with_name(src.name.replace("_labelIds.png", "_instanceIds.png"))
        shutil.copyfile(inst, gt_dir / f"{stem}_gtFine_instanceIds.png")
        shutil.copyfile(preds[i % len(sources)], pred_dir / f"{stem}_leftImg8bit.png")
    shutil.rmtree(dst / "pred_sources")
    return dst, dst / "results"


def run_official_cli(gt_root: str, pred_root: str, json_out: str) -> None:
    """What the side-by-side bench runs in a fresh interpreter: the official flow, result written as JSON."""
    with official_evaluator() as ev:
        result = official_folder_result(ev, Path(gt_root), Path(pred_root))
    Path(json_out).write_text(json.dumps({k: result[k] for k in ("confMatrix", *SCORE_FIELDS, *AVERAGE_FIELDS)}))


def bench_eval_folder(gt_root: Path, pred_root: Path, work_dir: Path, workers: int | None = None) -> dict:
    """Both evaluators end to end in fresh processes, start-up included, on the same folder; values compared."""
    import subprocess
    import sys

    def timed(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(
            argv,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        return time.perf_counter() - start

    ours_json, official_json = Path(work_dir) / "ours.json", Path(work_dir) / "official.json"
    cmd = [
        sys.executable,
        "-m",
        "segrepro.cli",
        "metrics",
        "cityscapes",
        "--gt-root",
        str(gt_root),
        "--pred-root",
        str(pred_root),
        "--json",
        str(ours_json),
    ] + (["--workers", str(workers)] if workers else [])
    ours_s = timed(cmd)
    official_s = timed(
        [
            sys.executable,
            "-c",
            "import sys; from segrepro.evaluation.bench import run_official_cli; run_official_cli(*sys.argv[1:])",
            str(gt_root),
            str(pred_root),
            str(official_json),
        ]
    )
    n_images = len(list((Path(gt_root) / "gtFine" / "val").glob("*/*_gtFine_labelIds.png")))
    ours = json.loads(ours_json.read_text())
    return {
        "machine": machine(),
        "load_average": os.getloadavg()[0],
        "images": n_images,
        "workers": workers or os.cpu_count(),
        "ours_s": ours_s,
        "official_s": official_s,
        "speedup": official_s / ours_s,
        "max_abs_difference": max_difference(json.loads(official_json.read_text()), ours),
    }


def markdown_folder(f: dict) -> str:
    return (
        f"| end to end, fresh processes (start-up included), {f['images']} pairs, {f['workers']} decode workers "
        f"| {f['official_s']:.2f} s | {f['ours_s']:.2f} s | {f['speedup']:.1f}× |\n\n"
        f"Machine: {f['machine']}; load average {f['load_average']:.1f}. Largest absolute difference over every "
        f"score and average: {f['max_abs_difference']:.1e}."
    )
