"""COCO-Stuff-27: the curated IIC split of COCO-Stuff-164k with the 182 → 27 supercategory mapping.

Layout (IIC / STEGO): ``images/{train2017,val2017}/<12-digit id>.jpg``, stuffthingmaps under
``annotations/{train2017,val2017}/<id>.png`` (or ``annotations/stuffthingmaps_trainval2017/...`` as the
AlignSeg-SSL code reads them), curated id lists in ``curated/{split}2017/Coco164kFull_Stuff_Coarse_7.txt``.
PNG value = COCO-Stuff category id − 1 (0..181, 11 unused thing values), 255 = unlabeled.

Class order (datasets.md §3.2): AlignSeg and STEGO/PiCIE produce the same partition in different index
orders. The default is AlignSeg's (alphabetical), ``order="stego"`` gives STEGO's; both are stored
explicitly below and the prepared manifest records which order its ``labels27`` PNGs use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from segrepro.data.paired import (
    Pair,
    PairedDataset,
    Transform,
    check_pairs,
    folder_pairs,
    list_problems,
    missing_dirs,
    read_ids,
    write_jpeg,
    write_prepared,
)
from segrepro.data.synth_scene import SceneClass, SceneComposer
from segrepro.data.validate import (
    atomic_output_dir,
    parallel_map,
    problem,
    raise_problems,
    split_count_problems,
    write_png,
)
from segrepro.errors import UserError

NAME = "coco_stuff27"
SPLITS = ("train", "val")
FOLDER = {"train": "train2017", "val": "val2017"}
CURATED_LIST = "Coco164kFull_Stuff_Coarse_7.txt"
OFFICIAL_CURATED = {"train": 49629, "val": 2175}
OFFICIAL_FULL = {"train": 118287, "val": 5000}

# Supercategory → stuffthingmaps PNG values (category id − 1), from datasets.md §3.2.
MEMBERS: dict[str, tuple[int, ...]] = {
    "accessory": (26, 27, 30, 31, 32),
    "animal": tuple(range(15, 25)),
    "appliance": (77, 78, 79, 80, 81),
    "building": (94, 95, 127, 150, 157, 165),
    "ceiling": (101, 102),
    "electronic": tuple(range(71, 77)),
    "floor": (100, 113, 114, 115, 116, 117),
    "food": tuple(range(51, 61)),
    "food-stuff": (120, 121, 152, 169),
    "furniture": (61, 62, 63, 64, 66, 69),
    "furniture-stuff": (97, 106, 107, 109, 111, 122, 129, 132, 155, 160, 164),
    "ground": (110, 124, 125, 135, 139, 143, 144, 146, 148, 153, 158),
    "indoor": tuple(range(83, 90)),
    "kitchen": (43, 45, 46, 47, 48, 49, 50),
    "outdoor": (9, 10, 12, 13, 14),
    "person": (0,),
    "plant": (93, 96, 118, 123, 128, 133, 141, 162, 168),
    "raw-material": (99, 131, 138, 142),
    "sky": (105, 156),
    "solid": (126, 134, 149, 159, 161, 181),
    "sports": tuple(range(33, 43)),
    "structural": (98, 112, 137, 145, 163),
    "textile": (91, 92, 103, 104, 108, 130, 136, 140, 151, 166, 167),
    "vehicle": tuple(range(1, 9)),
    "wall": tuple(range(170, 177)),
    "water": (119, 147, 154, 177, 178),
    "window": (179, 180),
}
THINGS = (
    "accessory",
    "animal",
    "appliance",
    "electronic",
    "food",
    "furniture",
    "indoor",
    "kitchen",
    "outdoor",
    "person",
    "sports",
    "vehicle",
)
UNUSED_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)  # thing ids COCO never used
ORDERS: dict[str, tuple[str, ...]] = {
    "alignseg": tuple(sorted(MEMBERS)),
    "stego": (
        "electronic",
        "appliance",
        "food",
        "furniture",
        "indoor",
        "kitchen",
        "accessory",
        "animal",
        "outdoor",
        "person",
        "sports",
        "vehicle",
        "ceiling",
        "floor",
        "food-stuff",
        "furniture-stuff",
        "raw-material",
        "textile",
        "wall",
        "window",
        "building",
        "ground",
        "plant",
        "sky",
        "solid",
        "structural",
        "water",
    ),
}
DEFAULT_ORDER = "alignseg"
CLASS_NAMES = ORDERS[DEFAULT_ORDER]
LEGAL = np.isin(np.arange(256), [v for m in MEMBERS.values() for v in m] + [255])


def coarse_lut(order: str = DEFAULT_ORDER) -> np.ndarray:
    """256-entry table: stuffthingmaps value → coarse index in ``order``; unused values and 255 → 255."""
    if order not in ORDERS:
        raise UserError(f"unknown COCO-Stuff-27 class order '{order}'; choose one of {', '.join(ORDERS)}")
    lut = np.full(256, 255, dtype=np.uint8)
    for idx, name in enumerate(ORDERS[order]):
        lut[list(MEMBERS[name])] = idx
    return lut


def reorder(order_from: str, order_to: str) -> np.ndarray:
    """Index permutation p with ``p[i_from] = i_to`` (e.g. AlignSeg → STEGO for fixtures/confusions)."""
    return np.array([ORDERS[order_to].index(n) for n in ORDERS[order_from]], dtype=np.int64)


def annotation_dir(root: Path, split: str) -> Path:
    """IIC/STEGO ``annotations/<split>2017`` or the AlignSeg-SSL ``annotations/stuffthingmaps_trainval2017/...``."""
    nested = Path(root) / "annotations" / "stuffthingmaps_trainval2017" / FOLDER[split]
    return nested if nested.is_dir() else Path(root) / "annotations" / FOLDER[split]


def curated_list(root: Path, split: str) -> Path:
    return Path(root) / "curated" / FOLDER[split] / CURATED_LIST


def _pairs(root: Path, split: str, ids: list[str]) -> list[Pair]:
    return [
        Pair(i, Path(root) / "images" / FOLDER[split] / f"{i}.jpg", annotation_dir(root, split) / f"{i}.png")
        for i in ids
    ]


class CocoStuff27Dataset(PairedDataset):
    """COCO-Stuff-27 train/val. ``curated=True`` reads the IIC list (the benchmark split); ``False`` takes
    every image in the folder, as the AlignSeg-SSL code does (os.listdir, here sorted)."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(
        self,
        root: Path,
        split: str,
        curated: bool = True,
        order: str = DEFAULT_ORDER,
        transform: Transform | None = None,
    ) -> None:
        if split not in SPLITS:
            raise UserError(f"unknown COCO-Stuff split '{split}'; choose one of {', '.join(SPLITS)}")
        lut = coarse_lut(order)
        self.class_names = ORDERS[order]
        if curated:
            path = curated_list(root, split)
            if not path.is_file():
                raise UserError(f"{path}: curated list not found; extract IIC's curated lists or pass curated=False")
            pairs = _pairs(root, split, read_ids(path))
        else:
            pairs, _ = folder_pairs(Path(root) / "images" / FOLDER[split], annotation_dir(root, split))
        super().__init__(pairs, lut, transform, Path(root) / "images" / FOLDER[split])


# -- synthetic stand-in ------------------------------------------------------------------------------
_ROLES = {
    "sky": "sky",
    "ground": "ground",
    "floor": "ground",
    "building": "stuff",
    "wall": "stuff",
    "plant": "stuff",
    "solid": "stuff",
    "structural": "stuff",
    "ceiling": "stuff",
    "window": "stuff",
    "water": "ground",
}


def scene_classes() -> tuple[SceneClass, ...]:
    """Up to two fine classes per coarse class (the first required in every split) plus unlabeled 255."""
    out = []
    for name in ORDERS["alignseg"]:
        role = _ROLES.get(name, "object" if name in THINGS else "stuff")
        out += [SceneClass(v, role, instances=name in THINGS, required=k == 0) for k, v in enumerate(MEMBERS[name][:2])]
    return (*out, SceneClass(255, "void", required=False))


def synth(out: Path, split_sizes: Mapping[str, int], size: tuple[int, int], seed: int) -> Path:
    """Synthetic COCO-Stuff in the IIC layout: ``split_sizes`` curated images per split (all 27 coarse
    classes present) plus one non-curated image per split, so the curated selection is exercised."""
    composer = SceneComposer(scene_classes(), appearance_seed=NAME)
    h, w = size
    with atomic_output_dir(Path(out), replaceable=("images", "annotations", "curated")) as tmp:
        for s, split in enumerate(SPLITS):
            count = split_sizes.get(split, 0)
            scenes = list(composer.compose_split(count, h, w, np.random.default_rng([seed, s])))
            scenes.append(composer.compose(h, w, np.random.default_rng([seed, s, 1])))
            ids = [f"{(s + 1) * 100000 + i:012d}" for i in range(len(scenes))]
            for i, scene in zip(ids, scenes, strict=True):
                write_jpeg(tmp / "images" / FOLDER[split] / f"{i}.jpg", scene.image)
                write_png(tmp / "annotations" / FOLDER[split] / f"{i}.png", scene.label.astype(np.uint8))
            path = curated_list(tmp, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{i}\n" for i in ids[:count]))
    return Path(out)


# -- prepare -----------------------------------------------------------------------------------------
def prepare(root: Path, out: Path, order: str = DEFAULT_ORDER) -> Path:
    """Validate images, stuffthingmaps and curated lists; write curated ``train.txt``/``val.txt``,
    ``labels27/{train2017,val2017}/<id>.png`` in ``order`` and the manifest."""
    root = Path(root)
    problems = missing_dirs(root, ("images", "annotations", "curated"))
    if problems:
        raise_problems(problems)
    lists: dict[str, list[str]] = {}
    sources: dict[str, dict] = {}
    curated_total = 0
    for split in SPLITS:
        img_dir, ann_dir, path = root / "images" / FOLDER[split], annotation_dir(root, split), curated_list(root, split)
        problems += missing_dirs(img_dir.parent, (FOLDER[split],)) + missing_dirs(ann_dir.parent, (FOLDER[split],))
        _, orphans = folder_pairs(img_dir, ann_dir)
        problems += orphans
        if not path.is_file():
            problems.append(problem(path, "curated list is missing", "extract IIC's COCOStuff164kCurated lists here"))
            continue
        ids = read_ids(path)
        curated_total += len(ids)
        problems += list_problems(path, ids, {img_dir: ".jpg", ann_dir: ".png"})
        present = [p for p in _pairs(root, split, ids) if p.image.is_file() and p.label.is_file()]
        probs, files = check_pairs(
            present, ("L",), LEGAL, "stuffthingmaps (0..181, 255)", root, f"check {NAME} {split}"
        )
        problems += probs
        sources.update(files)
        lists[split] = ids
    real = curated_total >= 0.5 * sum(OFFICIAL_CURATED.values())
    problems += split_count_problems(
        {s: curated_list(root, s) for s in lists},
        {s: len(v) for s, v in lists.items()},
        OFFICIAL_CURATED if real else None,
    )
    raise_problems(problems)
    lut = coarse_lut(order)

    def write_labels(tmp: Path) -> None:
        jobs = [(s, p) for s in lists for p in _pairs(root, s, lists[s])]

        def one(job: tuple[str, Pair]) -> None:
            split, pair = job
            with Image.open(pair.label) as im:
                write_png(tmp / "labels27" / FOLDER[split] / f"{pair.name}.png", lut[np.asarray(im, dtype=np.uint8)])

        parallel_map(one, jobs, desc="write labels27")

    extra = {
        "root": str(root.resolve()),
        "num_classes": 27,
        "class_order": order,
        "class_names": list(ORDERS[order]),
        "sources": sources,
    }
    return write_prepared(out, NAME, lists, extra, derived=("labels27", write_labels))
