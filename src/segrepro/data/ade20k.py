"""ADE20K (SceneParsing, ADEChallengeData2016): 150 classes with the "reduce zero label" shift.

Layout: ``ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_{8 digits}.jpg`` and
``annotations/{training,validation}/*.png`` (PNG L, 0 = "other objects", 1..150 the classes), plus
``objectInfo150.txt`` and ``sceneCategories.txt``. Train ids: 0 → 255 (ignored), v → v−1 (datasets.md §5);
predictions go back to the original encoding with +1.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from segrepro.data.paired import (
    PairedDataset,
    Transform,
    check_pairs,
    folder_pairs,
    shift_lut,
    synth_scenes,
    write_jpeg,
    write_prepared,
)
from segrepro.data.synth_scene import SceneClass, SceneComposer
from segrepro.data.validate import (
    atomic_output_dir,
    raise_problems,
    split_count_problems,
    unexpected_entries,
    write_png,
)
from segrepro.errors import UserError

NAME = "ade20k"
BASE = "ADEChallengeData2016"
SPLITS = ("train", "val")
FOLDER = {"train": "training", "val": "validation"}
PREFIX = {"train": "ADE_train_", "val": "ADE_val_"}
OFFICIAL_COUNTS = {"train": 20210, "val": 2000}
CLASS_NAMES: tuple[str, ...] = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
NUM_RAW = len(CLASS_NAMES) + 1  # raw PNG values 0..150
LUT = shift_lut(NUM_RAW)

_GROUND = {
    "floor",
    "road",
    "grass",
    "sidewalk",
    "earth",
    "field",
    "sand",
    "path",
    "runway",
    "dirt track",
    "land",
    "rug",
}
_STUFF = {
    "wall",
    "building",
    "tree",
    "ceiling",
    "mountain",
    "house",
    "sea",
    "fence",
    "rock",
    "skyscraper",
    "river",
    "hill",
    "bridge",
    "tower",
    "water",
    "curtain",
    "grandstand",
    "lake",
    "waterfall",
    "railing",
}
_THIN = {"pole", "streetlight", "column", "bannister", "flag"}


def base_dir(root: Path) -> Path:
    """``root`` may be ADEChallengeData2016 itself or the folder holding it."""
    root = Path(root)
    return root / BASE if (root / BASE).is_dir() else root


class ADE20KDataset(PairedDataset):
    """One split (train/val) of ADE20K with train ids 0..149 and 255 for raw 0."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, root: Path, split: str, transform: Transform | None = None) -> None:
        if split not in SPLITS:
            raise UserError(f"unknown ADE20K split '{split}'; choose one of {', '.join(SPLITS)}")
        base = base_dir(root)
        pairs, _ = folder_pairs(base / "images" / FOLDER[split], base / "annotations" / FOLDER[split])
        super().__init__(pairs, LUT, transform, base / "images" / FOLDER[split])


def scene_classes() -> tuple[SceneClass, ...]:
    """Raw values 1..150 with a plausible role each, plus raw 0 as unlabeled blobs."""

    def role(name: str) -> str:
        if name == "sky":
            return "sky"
        return "ground" if name in _GROUND else "stuff" if name in _STUFF else "thin" if name in _THIN else "object"

    return tuple(SceneClass(v + 1, role(n)) for v, n in enumerate(CLASS_NAMES)) + (
        SceneClass(0, "void", required=False),
    )


def synth(out: Path, split_sizes: Mapping[str, int], size: tuple[int, int], seed: int) -> Path:
    """Synthetic ADE20K in the official layout; each split shows all 150 classes across its images."""
    composer = SceneComposer(scene_classes(), appearance_seed=NAME)
    with atomic_output_dir(Path(out), replaceable=(BASE,)) as tmp:
        base = tmp / BASE
        for split, i, scene in synth_scenes(composer, NAME, split_sizes, SPLITS, size, seed):
            stem = f"{PREFIX[split]}{i + 1:08d}"
            write_jpeg(base / "images" / FOLDER[split] / f"{stem}.jpg", scene.image)
            write_png(base / "annotations" / FOLDER[split] / f"{stem}.png", scene.label.astype(np.uint8))
            with open(base / "sceneCategories.txt", "a") as fh:
                fh.write(f"{stem} synthetic\n")
        header = "Idx\tRatio\tTrain\tVal\tName\n"
        rows = "".join(f"{v + 1}\t0\t0\t0\t{n}\n" for v, n in enumerate(CLASS_NAMES))
        (base / "objectInfo150.txt").write_text(header + rows)
    return Path(out)


def prepare(root: Path, out: Path) -> Path:
    """Validate the layout and every pair; write ``train.txt``/``val.txt`` stems and the manifest."""
    base = base_dir(root)
    problems: list[str] = []
    for top in ("images", "annotations"):
        if not (base / top).is_dir():
            problems.append(f"{base / top}: folder missing; {root} must hold {BASE}/images and {BASE}/annotations")
        problems += unexpected_entries(base / top, FOLDER.values(), "split")
    lists: dict[str, list[str]] = {}
    sources: dict[str, dict] = {}
    for split in SPLITS:
        pairs, orphans = folder_pairs(base / "images" / FOLDER[split], base / "annotations" / FOLDER[split])
        problems += orphans
        problems += [
            f"{p.image}: name does not start with {PREFIX[split]}; keep the official file names"
            for p in pairs
            if not p.name.startswith(PREFIX[split])
        ]
        probs, files = check_pairs(
            pairs, ("L",), np.arange(256) < NUM_RAW, "ADE20K 0..150", base, f"check ade20k {split}"
        )
        problems += probs
        sources.update(files)
        lists[split] = [p.name for p in pairs]
    real = sum(len(v) for v in lists.values()) >= 0.5 * sum(OFFICIAL_COUNTS.values())
    folders = {s: base / "images" / FOLDER[s] for s in SPLITS}
    problems += split_count_problems(folders, {s: len(v) for s, v in lists.items()}, OFFICIAL_COUNTS if real else None)
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
