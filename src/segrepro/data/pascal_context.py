"""PASCAL Context, 59 classes (datasets.md §4), in mmseg's converted layout under VOC2010.

``VOCdevkit/VOC2010/JPEGImages/<id>.jpg``, ``SegmentationClassContext/<id>.png`` (PNG L, 0..59 from the
Detail API's 60-id digitize mapping, alphabetical, 0 = background) and
``ImageSets/SegmentationContext/{train,val}.txt``. The 59-class benchmark drops background at load time
("reduce zero label": 0 → 255, k → k−1); ``num_classes=60`` keeps it as class 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from segrepro.data.paired import (
    Pair,
    PairedDataset,
    Transform,
    check_pairs,
    identity_lut,
    list_problems,
    missing_dirs,
    read_ids,
    shift_lut,
    synth_scenes,
    write_jpeg,
    write_prepared,
)
from segrepro.data.synth_scene import SceneClass, SceneComposer
from segrepro.data.validate import atomic_output_dir, problem, raise_problems, write_png
from segrepro.errors import UserError

NAME = "pascal_context"
SPLITS = ("train", "val")
IMAGES, LABELS, LISTS = "JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"
# Toolkits report 4,998/5,105 or 4,996/5,104 (datasets.md §4.1); either is accepted for the real set.
OFFICIAL_COUNTS = {"train": (4998, 4996), "val": (5105, 5104)}
CLASS_NAMES_60: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "pottedplant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tvmonitor",
    "wall",
    "water",
    "window",
    "wood",
)
CLASS_NAMES = CLASS_NAMES_60[1:]
LEGAL = np.arange(256) < len(CLASS_NAMES_60)


def base_dir(root: Path) -> Path:
    """``root/VOCdevkit/VOC2010``, ``root/VOC2010`` or root itself."""
    root = Path(root)
    for cand in (root / "VOCdevkit" / "VOC2010", root / "VOC2010"):
        if cand.is_dir():
            return cand
    return root


def _pairs(base: Path, ids: list[str]) -> list[Pair]:
    return [Pair(i, base / IMAGES / f"{i}.jpg", base / LABELS / f"{i}.png") for i in ids]


class PascalContextDataset(PairedDataset):
    """train/val with 59 classes (0..58, background ignored) or, with ``num_classes=60``, 0..59."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, root: Path, split: str, num_classes: int = 59, transform: Transform | None = None) -> None:
        if split not in SPLITS:
            raise UserError(f"unknown PASCAL Context split '{split}'; choose one of {', '.join(SPLITS)}")
        if num_classes not in (59, 60):
            raise UserError(f"PASCAL Context has 59 or 60 classes, not {num_classes}")
        base = base_dir(root)
        path = base / LISTS / f"{split}.txt"
        if not path.is_file():
            raise UserError(
                f"{path}: list file not found; check the root (segrepro data prepare pascal_context validates it)"
            )
        self.num_classes = num_classes
        self.class_names = CLASS_NAMES if num_classes == 59 else CLASS_NAMES_60
        lut = shift_lut(len(CLASS_NAMES_60)) if num_classes == 59 else identity_lut(len(CLASS_NAMES_60))
        super().__init__(_pairs(base, read_ids(path)), lut, transform, path)


# -- synthetic stand-in ------------------------------------------------------------------------------
_ROLES = {
    "sky": "sky",
    "ground": "ground",
    "road": "ground",
    "grass": "ground",
    "floor": "ground",
    "sidewalk": "ground",
    "snow": "ground",
    "track": "ground",
    "platform": "ground",
    "water": "ground",
    "building": "stuff",
    "wall": "stuff",
    "tree": "stuff",
    "mountain": "stuff",
    "fence": "stuff",
    "ceiling": "stuff",
    "window": "stuff",
    "curtain": "stuff",
    "rock": "stuff",
    "wood": "stuff",
    "door": "stuff",
}


def scene_classes() -> tuple[SceneClass, ...]:
    """Values 1..59 with plausible roles; background (0, ignored in the 59-class benchmark) as blobs."""
    return (
        SceneClass(0, "void", required=False),
        *(SceneClass(v, _ROLES.get(n, "object")) for v, n in enumerate(CLASS_NAMES_60) if v > 0),
    )


def synth(out: Path, split_sizes: Mapping[str, int], size: tuple[int, int], seed: int) -> Path:
    """Synthetic PASCAL Context in mmseg's VOC2010 layout; ids follow VOC's ``YYYY_NNNNNN``."""
    composer = SceneComposer(scene_classes(), appearance_seed=NAME)
    ids: dict[str, list[str]] = {s: [] for s in SPLITS}
    with atomic_output_dir(Path(out), replaceable=("VOCdevkit",)) as tmp:
        base = tmp / "VOCdevkit" / "VOC2010"
        for split, i, scene in synth_scenes(composer, NAME, split_sizes, SPLITS, size, seed):
            name = f"{2008 if split == 'train' else 2009}_{i:06d}"
            ids[split].append(name)
            write_jpeg(base / IMAGES / f"{name}.jpg", scene.image)
            write_png(base / LABELS / f"{name}.png", scene.label.astype(np.uint8))
        (base / LISTS).mkdir(parents=True, exist_ok=True)
        for split, names in ids.items():
            (base / LISTS / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return Path(out)


# -- prepare -----------------------------------------------------------------------------------------
def prepare(root: Path, out: Path) -> Path:
    """Validate list files, pairs, modes, sizes and 0..59 values; write split lists and the manifest."""
    base = base_dir(root)
    problems = missing_dirs(base, (IMAGES, LABELS, LISTS))
    if problems:
        raise_problems(problems)
    lists: dict[str, list[str]] = {}
    sources: dict[str, dict] = {}
    for split in SPLITS:
        path = base / LISTS / f"{split}.txt"
        if not path.is_file():
            problems.append(problem(path, "list file is missing", f"write the {split} ids, one per line"))
            continue
        ids = read_ids(path)
        problems += list_problems(path, ids, {base / IMAGES: ".jpg", base / LABELS: ".png"})
        present = [p for p in _pairs(base, ids) if p.image.is_file() and p.label.is_file()]
        probs, files = check_pairs(present, ("L",), LEGAL, "Context 0..59", Path(root), f"check pascal_context {split}")
        problems += probs
        sources.update(files)
        lists[split] = ids
    if sum(len(v) for v in lists.values()) >= 0.5 * sum(c[0] for c in OFFICIAL_COUNTS.values()):
        problems += [
            problem(
                base / LISTS / f"{s}.txt",
                f"split '{s}' has {len(v)} images, the official set has {' or '.join(map(str, OFFICIAL_COUNTS[s]))}",
                "restore the complete split",
            )
            for s, v in lists.items()
            if len(v) not in OFFICIAL_COUNTS[s]
        ]
    raise_problems(problems)
    return write_prepared(
        out,
        NAME,
        lists,
        {
            "root": str(Path(root).resolve()),
            "num_classes": len(CLASS_NAMES),
            "label_map": "raw 0 -> 255, v -> v-1",
            "sources": sources,
        },
    )
