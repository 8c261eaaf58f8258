"""PASCAL VOC 2012 + SBD ("aug"): 21 classes, 255 = void boundary band (datasets.md §2).

Two layouts are read, and ``synth`` writes both under one root:

* ``voc2012`` (supervised code, mmseg): ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass (PNG P, VOC
  ids), SegmentationClassAug (PNG L, trainaug + val, DeepLab style), ImageSets/Segmentation/*.txt}``.
* ``pvoc`` (self-supervised AlignSeg, always ``<root>/PVOC``): ``images/``, ``SegmentationClass/``,
  ``SegmentationClassAug/``, ``sets/{train,trainaug,val}.txt``.

val masks come from ``SegmentationClass`` (what the SSL evaluator reads); train/trainaug masks from
``SegmentationClassAug``. VOC-origin masks keep their 255 boundaries, SBD-origin ones have none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segrepro.data.paired import (
    Pair,
    PairedDataset,
    Transform,
    check_pairs,
    identity_lut,
    list_problems,
    missing_dirs,
    read_ids,
    synth_scenes,
    write_jpeg,
    write_prepared,
)
from segrepro.data.synth_scene import SceneClass, SceneComposer
from segrepro.data.validate import atomic_output_dir, problem, raise_problems, split_count_problems, write_png
from segrepro.errors import UserError

NAME = "voc"
SPLITS = ("trainaug", "val", "train")
SYNTH_SPLITS = ("trainaug", "val")  # --split-sizes order; 'train' is the VOC-origin part of trainaug
OFFICIAL_COUNTS = {"trainaug": 10582, "val": 1449, "train": 1464}
CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
LUT = identity_lut(len(CLASS_NAMES))
LEGAL = (np.arange(256) < len(CLASS_NAMES)) | (np.arange(256) == 255)


@dataclass(frozen=True)
class Layout:
    """Where one layout keeps images, masks and list files, relative to its base folder."""

    name: str
    images: str
    lists: str
    list_names: Mapping[str, str]  # split → list file name


VOC2012 = Layout(
    "voc2012",
    "JPEGImages",
    "ImageSets/Segmentation",
    {"trainaug": "trainaug.txt", "val": "val.txt", "train": "train.txt"},
)
PVOC = Layout("pvoc", "images", "sets", {"trainaug": "trainaug.txt", "val": "val.txt", "train": "train.txt"})
LAYOUTS = {"voc2012": VOC2012, "pvoc": PVOC}


def mask_dir(split: str) -> str:
    return "SegmentationClass" if split == "val" else "SegmentationClassAug"


def base_dir(root: Path, layout: str) -> Path:
    """voc2012: ``root/VOCdevkit/VOC2012``, ``root/VOC2012`` or root itself; pvoc: ``root/PVOC``."""
    root = Path(root)
    if layout == "pvoc":
        return root / "PVOC"
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if cand.is_dir():
            return cand
    return root


def find_layouts(root: Path) -> list[str]:
    """Layouts present under ``root`` (voc2012 first)."""
    return [n for n, lay in LAYOUTS.items() if (base_dir(root, n) / lay.lists).is_dir()]


def voc_palette() -> list[int]:
    """The VOC colour map (bits of the index spread over R, G, B from the high bit down); 255 → (224,224,192)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


class VOCDataset(PairedDataset):
    """trainaug / val / train of VOC 2012 + SBD, from either layout (``layout=None`` picks the first found)."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, root: Path, split: str, layout: str | None = None, transform: Transform | None = None) -> None:
        if split not in SPLITS:
            raise UserError(f"unknown VOC split '{split}'; choose one of {', '.join(SPLITS)}")
        found = find_layouts(root)
        layout = layout or (found[0] if found else "voc2012")
        if layout not in LAYOUTS:
            raise UserError(f"unknown VOC layout '{layout}'; choose one of {', '.join(LAYOUTS)}")
        lay, base = LAYOUTS[layout], base_dir(root, layout)
        list_path = base / lay.lists / lay.list_names[split]
        if not list_path.is_file():
            raise UserError(
                f"{list_path}: list file not found; check the VOC root (segrepro data prepare voc validates it)"
            )
        ids = read_ids(list_path)
        pairs = [Pair(i, base / lay.images / f"{i}.jpg", base / mask_dir(split) / f"{i}.png") for i in ids]
        self.layout = layout
        super().__init__(pairs, LUT, transform, list_path)


# -- synthetic stand-in ------------------------------------------------------------------------------
def scene_classes() -> tuple[SceneClass, ...]:
    """Background fills the frame (the 'sky' role with no ground: objects anywhere), 20 object classes."""
    return (
        SceneClass(0, "sky"),
        *(SceneClass(v, "object") for v in range(1, 21)),
        SceneClass(255, "void", required=False),
    )


def boundary_band(label: np.ndarray, width: int) -> np.ndarray:
    """VOC's void band: every pixel within ``width`` (city-block) of a class boundary becomes 255."""
    edge = np.zeros(label.shape, bool)
    dy, dx = label[1:] != label[:-1], label[:, 1:] != label[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return np.where(edge, 255, label).astype(np.uint8)


def _write_palette_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(label))
    im.putpalette(voc_palette())
    im.save(path, format="PNG", compress_level=6)


def synth(out: Path, split_sizes: Mapping[str, int], size: tuple[int, int], seed: int) -> Path:
    """Synthetic VOC 2012 + SBD in both layouts. The first ~14% of trainaug (at least one) is 'VOC train'
    (ids 2007_*, with boundary bands and a SegmentationClass PNG P); the rest is SBD-origin (2010_*)."""
    composer = SceneComposer(scene_classes(), appearance_seed=NAME)
    n_train = max(1, round(split_sizes.get("trainaug", 0) * OFFICIAL_COUNTS["train"] / OFFICIAL_COUNTS["trainaug"]))
    band = max(1, round(min(size) / 100))
    ids: dict[str, list[str]] = {"trainaug": [], "val": [], "train": []}
    with atomic_output_dir(Path(out), replaceable=("VOCdevkit", "PVOC")) as tmp:
        bases = {"voc2012": tmp / "VOCdevkit" / "VOC2012", "pvoc": tmp / "PVOC"}
        for split, i, scene in synth_scenes(composer, NAME, split_sizes, SYNTH_SPLITS, size, seed):
            voc_origin = split == "val" or i < n_train
            name = f"2007_{i:06d}" if split == "val" else f"2007_{100000 + i:06d}" if voc_origin else f"2010_{i:06d}"
            ids[split].append(name)
            if split == "trainaug" and voc_origin:
                ids["train"].append(name)
            label = scene.label.astype(np.uint8)
            label = boundary_band(label, band) if voc_origin else np.where(label == 255, 0, label).astype(np.uint8)
            for layout, base in bases.items():
                write_jpeg(base / LAYOUTS[layout].images / f"{name}.jpg", scene.image)
                write_png(base / "SegmentationClassAug" / f"{name}.png", label)
                if voc_origin:
                    _write_palette_png(base / "SegmentationClass" / f"{name}.png", label)
        lists = {**{s: sorted(v) for s, v in ids.items()}, "trainval": sorted(ids["train"] + ids["val"])}
        lists["aug"] = sorted(set(ids["trainaug"]) - set(ids["train"]))
        for layout, base in bases.items():
            for split, names in lists.items():
                if layout == "voc2012" or split in PVOC.list_names:
                    path = base / LAYOUTS[layout].lists / f"{split}.txt"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("".join(f"{n}\n" for n in names))
    return Path(out)


# -- prepare -----------------------------------------------------------------------------------------
def _layout_problems(root: Path, layout: str) -> tuple[list[str], dict[str, list[str]], dict[str, dict]]:
    lay, base = LAYOUTS[layout], base_dir(root, layout)
    problems = missing_dirs(base, (lay.images, "SegmentationClass", "SegmentationClassAug", lay.lists))
    if problems:
        return problems, {}, {}
    lists: dict[str, list[str]] = {}
    sources: dict[str, dict] = {}
    for split in SPLITS:
        list_path = base / lay.lists / lay.list_names[split]
        if not list_path.is_file():
            problems.append(problem(list_path, "list file is missing", f"write the {split} ids, one per line"))
            continue
        ids = read_ids(list_path)
        img_dir, msk_dir = base / lay.images, base / mask_dir(split)
        missing = list_problems(list_path, ids, {img_dir: ".jpg", msk_dir: ".png"})
        problems += missing
        present = [
            Pair(i, img_dir / f"{i}.jpg", msk_dir / f"{i}.png")
            for i in ids
            if (img_dir / f"{i}.jpg").is_file() and (msk_dir / f"{i}.png").is_file()
        ]
        modes = ("P",) if split == "val" else ("L", "P")
        probs, files = check_pairs(present, modes, LEGAL, "VOC 0..20/255", Path(root), f"check voc {layout} {split}")
        problems += probs
        sources.update(files)
        lists[split] = ids
    if "val" in lists and "trainaug" in lists:
        both = sorted(set(lists["val"]) & set(lists["trainaug"]))
        if both:
            problems.append(
                problem(
                    base / lay.lists / lay.list_names["trainaug"],
                    f"{len(both)} val id(s) also in trainaug (e.g. {both[0]})",
                    "trainaug must exclude VOC val; rebuild it",
                )
            )
    if "train" in lists and "trainaug" in lists:
        extra = sorted(set(lists["train"]) - set(lists["trainaug"]))
        if extra:
            problems.append(
                problem(
                    base / lay.lists / lay.list_names["train"],
                    f"{len(extra)} train id(s) not in trainaug (e.g. {extra[0]})",
                    "trainaug must contain VOC train; rebuild it",
                )
            )
    counts = {s: len(v) for s, v in lists.items()}
    real = sum(counts.values()) >= 0.5 * sum(OFFICIAL_COUNTS.values())
    problems += split_count_problems(
        {s: base / lay.lists / lay.list_names[s] for s in counts}, counts, OFFICIAL_COUNTS if real else None
    )
    return problems, lists, sources


def prepare(root: Path, out: Path) -> Path:
    """Validate every layout found (list files, pairing, modes, sizes, values, split overlap) and write the
    split lists of the first one plus a manifest that hashes every source file."""
    layouts = find_layouts(root)
    if not layouts:
        raise_problems(
            [
                problem(
                    Path(root), "no VOC layout found", "expected VOCdevkit/VOC2012/ImageSets/Segmentation or PVOC/sets"
                )
            ]
        )
    problems: list[str] = []
    lists: dict[str, list[str]] = {}
    sources: dict[str, dict] = {}
    for layout in layouts:
        probs, layout_lists, files = _layout_problems(root, layout)
        problems += probs
        sources.update(files)
        lists = lists or layout_lists
    raise_problems(problems)
    return write_prepared(
        out,
        NAME,
        lists,
        {"root": str(Path(root).resolve()), "layouts": layouts, "num_classes": len(CLASS_NAMES), "sources": sources},
    )
