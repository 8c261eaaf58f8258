"""``segrepro data synth cityscapes --profile full``: a stand-in at the real dataset's scale.

Why: every CPU-side stage (prepare, DVC, metrics, packaging, the loader) must be measured and bounded at
2,975 / 500 / 1,525 images of 1024×2048 before anyone runs it on the real set. This writes the official
cities with their official per-city counts (``--fraction`` scales each city, keeping at least one image),
the official layout and encodings (leftImg8bit, gtFine labelIds / instanceIds / color / polygons).

* All cores: one scene per task in a process pool; each image's random stream is seeded by
  (seed, split, index), so the result does not depend on the worker count or on the order of completion.
* Bounded memory: workers hold one scene each; the plan is a list of small tuples, never arrays.
* Resumable: every file is written to a temp name and renamed, an image whose five files all exist is
  skipped, and temp files left by a killed run are removed at the start. ``.segrepro-synth.json`` records
  the settings, so a rerun with other settings is refused instead of mixing two stand-ins.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segrepro.data import cityscapes as cs
from segrepro.data.synth_scene import SceneComposer
from segrepro.data.validate import write_png
from segrepro.errors import UserError
from segrepro.io import atomic_path, atomic_write_text

SETTINGS_NAME = ".segrepro-synth.json"
FRAME = 19  # the annotated frame of every real snippet
IMAGE_COMPRESS_LEVEL = 1  # noisy RGB: level 1 is ~25 % faster than 6 for ~7 % more bytes
LABEL_COMPRESS_LEVEL = 6  # flat label maps: level 6 halves their size at no measurable cost
_KINDS = ("labelIds", "instanceIds", "color", "polygons")


@dataclass(frozen=True)
class FullSettings:
    """What a stand-in was written with; a resume must use the same."""

    profile: str
    fraction: float
    size: tuple[int, int]
    seed: int

    def as_json(self) -> dict:
        return {**asdict(self), "size": list(self.size)}


@dataclass(frozen=True)
class Item:
    """One image of the plan: where it goes and which classes it must show."""

    split_index: int
    split: str
    city: str
    index: int  # position within the split: the random stream's key
    stem: str
    force: tuple[int, ...]


def city_counts(fraction: float) -> dict[str, dict[str, int]]:
    """Official per-city counts scaled by ``fraction`` (each city keeps at least one image)."""
    if not 0 < fraction <= 1:
        raise UserError(f"--fraction {fraction}: give a number in (0, 1], e.g. 0.0625 for 1/16 of full size")
    return {
        split: {city: max(1, round(n * fraction)) for city, n in sorted(cities.items())}
        for split, cities in cs.OFFICIAL_CITIES.items()
    }


def plan(fraction: float, composer: SceneComposer) -> list[Item]:
    """Every image of the stand-in in split / city / sequence order.

    Coverage: required class k is forced into image ``k % count`` of each split, so every evaluated class
    appears in every split without the sequential bookkeeping of ``compose_split`` (items are independent).
    """
    required = sorted(composer.required)
    items = []
    for s, split in enumerate(cs.SPLITS):
        counts = city_counts(fraction)[split]
        total = sum(counts.values())
        i = 0
        for city, n in counts.items():
            for seq in range(n):
                force = tuple(c for k, c in enumerate(required) if k % total == i)
                items.append(Item(s, split, city, i, f"{city}_{seq:06d}_{FRAME:06d}", force))
                i += 1
    return items


def outputs(root: Path, item: Item) -> list[Path]:
    """The five files of one image (image, labelIds, instanceIds, color, polygons)."""
    return [
        cs.image_path(root, item.split, item.city, item.stem),
        *(cs.gt_path(root, item.split, item.city, item.stem, kind) for kind in _KINDS),
    ]


_COMPOSER: SceneComposer | None = None


def _composer() -> SceneComposer:
    global _COMPOSER
    if _COMPOSER is None:
        _COMPOSER = SceneComposer(cs.scene_classes(), appearance_seed=cs.NAME)
    return _COMPOSER


def _write(path: Path, write) -> int:
    with atomic_path(path) as tmp:
        write(tmp)
    return path.stat().st_size


def write_item(root: Path, item: Item, size: tuple[int, int], seed: int) -> int:
    """Compose and write one image's files; returns the bytes written (0 when it was already complete)."""
    files = outputs(root, item)
    if all(f.is_file() for f in files):
        return 0
    h, w = size
    scene = _composer().compose(h, w, np.random.default_rng([seed, item.split_index, item.index]), item.force)
    label, inst = scene.label, scene.instance
    if item.split == "test":
        label, inst = cs.withheld_test_label(label), np.full_like(inst, -1)
    label8 = label.astype(np.uint8)
    polygons = json.dumps(cs.polygons(label, inst), indent=1) + "\n"
    image_p, label_p, inst_p, color_p, poly_p = files
    written = _write(label_p, lambda t: write_png(t, label8, LABEL_COMPRESS_LEVEL))
    written += _write(inst_p, lambda t: write_png(t, cs.instance_ids(label, inst), LABEL_COMPRESS_LEVEL))
    written += _write(color_p, lambda t: write_png(t, cs.color_image(label8), LABEL_COMPRESS_LEVEL))
    written += _write(poly_p, lambda t: t.write_text(polygons))
    return written + _write(image_p, lambda t: write_png(t, scene.image, IMAGE_COMPRESS_LEVEL))


def _task(args: tuple[Path, Item, tuple[int, int], int]) -> int:
    return write_item(*args)


def _check_out(out: Path, settings: FullSettings) -> None:
    """Refuse a folder with foreign files or a stand-in of other settings; drop a killed run's temp files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if not out.exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in (cs.IMAGE_DIR, cs.GT_DIR, SETTINGS_NAME))
    if foreign:
        raise UserError(f"{out}: holds other files ({', '.join(foreign[:5])}); choose an empty or new --out")
    marker = out / SETTINGS_NAME
    if marker.is_file() and json.loads(marker.read_text()) != settings.as_json():
        raise UserError(
            f"{out}: holds a stand-in written with {marker.read_text().strip()}; rerun with the same "
            "settings to resume, or choose a new --out"
        )
    for top in (cs.IMAGE_DIR, cs.GT_DIR):
        for tmp in (out / top).glob("*/*/.*.tmp"):
            tmp.unlink()


def synth_full(
    out: Path,
    fraction: float = 1.0,
    size: tuple[int, int] = (1024, 2048),
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Write (or finish) the full-profile stand-in at ``out``; returns counts, bytes and seconds."""
    out = Path(out).resolve()
    settings = FullSettings("full", float(fraction), (int(size[0]), int(size[1])), int(seed))
    _check_out(out, settings)
    items = plan(fraction, _composer())
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SETTINGS_NAME, json.dumps(settings.as_json()) + "\n")
    workers = max(1, workers or os.cpu_count() or 1)
    tasks = ((out, item, settings.size, settings.seed) for item in items)
    start, written, skipped = time.perf_counter(), 0, 0
    bar = tqdm(total=len(items), desc="synth cityscapes (full profile)", unit="img", disable=not progress)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ctx.Pool(workers)) if workers > 1 else None
        for n in pool.imap_unordered(_task, tasks, chunksize=1) if pool else map(_task, tasks):
            written += n
            skipped += n == 0
            bar.update(1)
            bar.set_postfix_str(f"{written / 2**20 / max(time.perf_counter() - start, 1e-9):.0f} MB/s", refresh=False)
    bar.close()
    counts = {split: sum(c.values()) for split, c in city_counts(fraction).items()}
    return {
        "root": str(out),
        "counts": counts,
        "images": len(items),
        "skipped": skipped,
        "bytes": written,
        "seconds": time.perf_counter() - start,
        "workers": workers,
    }


def expected_images(fraction: float) -> int:
    """Image count of a stand-in at ``fraction`` (for the bench and the tests)."""
    return sum(sum(c.values()) for c in city_counts(fraction).values())
