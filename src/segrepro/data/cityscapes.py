"""Cityscapes: official layout, reader and synthetic stand-in (``prepare`` lives in cityscapes_prepare).

Layout: ``{root}/{leftImg8bit|gtFine}/{split}/{city}/{city}_{seq:06d}_{frame:06d}_{type}{ext}``. Labels are
labelIds (0..33) mapped to trainIds (0..18, 255 ignore) through cityscapesscripts' table; instanceIds
(16-bit, ``labelId*1000+k``) are exposed for nIoU. The optional coarse set is ``leftImg8bit/train_extra`` with
``gtCoarse/train_extra/{city}/{stem}_gtCoarse_{kind}`` (19,998 images; GALD's fine → coarse → fine schedule).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image
from tqdm import tqdm

from segrepro.data.cityscapes_labels import IGNORE_INDEX, LABELS, class_names, label_to_train_lut, train_classes
from segrepro.data.synth_scene import SceneClass, SceneComposer
from segrepro.data.validate import atomic_output_dir, write_png
from segrepro.errors import UserError

NAME = "cityscapes"
SPLITS = ("train", "val", "test")
EXTRA_SPLIT = "train_extra"  # optional: coarse labels only (gtCoarse)
COMBINED_SPLITS = {
    "trainval": ("train", "val"),  # the test-server recipes train on train + val (fine)
    "trainval_coarse": ("train", EXTRA_SPLIT, "val"),  # GALD's train++ list: fine train + coarse extra + fine val
}
CLASS_NAMES = tuple(class_names())
IMAGE_DIR, GT_DIR, COARSE_DIR = "leftImg8bit", "gtFine", "gtCoarse"
IMAGE_SUFFIX = "_leftImg8bit.png"
GT_KINDS = {  # kind → file suffix after the stem
    "labelIds": "_gtFine_labelIds.png",
    "instanceIds": "_gtFine_instanceIds.png",
    "color": "_gtFine_color.png",
    "polygons": "_gtFine_polygons.json",
    "labelTrainIds": "_gtFine_labelTrainIds.png",
    "instanceTrainIds": "_gtFine_instanceTrainIds.png",  # csCreateTrainIdInstanceImgs writes it in place
}
COARSE_KINDS = {
    kind: GT_KINDS[kind].replace("gtFine", "gtCoarse") for kind in ("labelIds", "instanceIds", "color", "polygons")
}
# Official cities and image counts per split (datasets.md §1.1).
OFFICIAL_CITIES: dict[str, dict[str, int]] = {
    "train": {
        "aachen": 174,
        "bochum": 96,
        "bremen": 316,
        "cologne": 154,
        "darmstadt": 85,
        "dusseldorf": 221,
        "erfurt": 109,
        "hamburg": 248,
        "hanover": 196,
        "jena": 119,
        "krefeld": 99,
        "monchengladbach": 94,
        "strasbourg": 365,
        "stuttgart": 196,
        "tubingen": 144,
        "ulm": 95,
        "weimar": 142,
        "zurich": 122,
    },
    "val": {"frankfurt": 267, "lindau": 59, "munster": 174},
    "test": {"berlin": 544, "bielefeld": 181, "bonn": 46, "leverkusen": 58, "mainz": 298, "munich": 398},
}
EXTRA_CITIES = (  # leftImg8bit_trainextra.zip (19,998 images; per-city counts are not checked)
    "augsburg",
    "bad-honnef",
    "bamberg",
    "bayreuth",
    "dortmund",
    "dresden",
    "duisburg",
    "erlangen",
    "freiburg",
    "heidelberg",
    "heilbronn",
    "karlsruhe",
    "konigswinter",
    "konstanz",
    "mannheim",
    "muhlheim-ruhr",
    "nuremberg",
    "oberhausen",
    "saarbrucken",
    "schweinfurt",
    "troisdorf",
    "wuppertal",
    "wurzburg",
)
OFFICIAL_COUNTS = {split: sum(c.values()) for split, c in OFFICIAL_CITIES.items()}  # 2975 / 500 / 1525
MAX_LABEL_ID = 33
INSTANCE_LABEL_IDS = frozenset(lab.id for lab in LABELS if lab.hasInstances and lab.id >= 0)
EGO_LABEL_ID, BORDER_LABEL_ID = 1, 2


def image_path(root: Path, split: str, city: str, stem: str) -> Path:
    return root / IMAGE_DIR / split / city / f"{stem}{IMAGE_SUFFIX}"


def gt_path(root: Path, split: str, city: str, stem: str, kind: str) -> Path:
    return root / GT_DIR / split / city / f"{stem}{GT_KINDS[kind]}"


def coarse_path(root: Path, split: str, city: str, stem: str, kind: str) -> Path:
    return root / COARSE_DIR / split / city / f"{stem}{COARSE_KINDS[kind]}"


def stem_of(path: Path) -> str:
    """``aachen_000000_000019_leftImg8bit.png`` → ``aachen_000000_000019`` (also for gtFine files)."""
    name = path.name
    for suffix in (IMAGE_SUFFIX, *GT_KINDS.values(), *COARSE_KINDS.values()):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# -- reader ------------------------------------------------------------------------------------------
class CityscapesDataset:
    """One split of Cityscapes in the official layout (map-style: ``len`` and ``[i]``, all a DataLoader needs;
    not a torch ``Dataset`` subclass, so ``data prepare`` and ``data synth`` start without importing torch).

    Labels are trainIds (uint8, 255 ignore): read from ``prepared``'s ``*_labelTrainIds.png`` when given,
    otherwise mapped from ``*_gtFine_labelIds.png`` with cityscapesscripts' table; ``train_extra`` images
    always map their ``*_gtCoarse_labelIds.png`` (prepare converts gtFine only). The test split has no
    labels (the official ones are withheld). ``transform(sample)`` turns the numpy sample into tensors.
    """

    num_classes = len(CLASS_NAMES)
    ignore_index = IGNORE_INDEX
    class_names = CLASS_NAMES

    def __init__(
        self,
        root: Path,
        split: str,
        prepared: Path | None = None,
        with_instances: bool = False,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        if split not in (*SPLITS, EXTRA_SPLIT) and split not in COMBINED_SPLITS:
            raise UserError(
                f"unknown Cityscapes split '{split}'; choose one of "
                f"{', '.join((*SPLITS, EXTRA_SPLIT, *COMBINED_SPLITS))}"
            )
        self.root, self.split = Path(root), split
        self.prepared = Path(prepared) if prepared is not None else None
        self.with_instances, self.transform = with_instances, transform
        self.has_labels = split != "test"
        parts = COMBINED_SPLITS.get(split, (split,))
        self.images = []
        for part in parts:
            found = sorted((self.root / IMAGE_DIR / part).glob(f"*/*{IMAGE_SUFFIX}"))
            if not found:
                fix = (
                    "extract leftImg8bit_trainextra.zip and gtCoarse.zip here, or write a stand-in with "
                    "`segrepro data synth cityscapes` (split_sizes with a 4th, train_extra count)"
                    if part == EXTRA_SPLIT
                    else "check the dataset root (segrepro data prepare cityscapes --root DIR validates the layout)"
                )
                raise UserError(f"{self.root / IMAGE_DIR / part}: no *{IMAGE_SUFFIX} images; {fix}")
            self.images += found
        if self.has_labels:
            for index in dict.fromkeys((0, len(self.images) - 1)):  # the first and last part's labels
                if not self.label_path(index).is_file():
                    raise UserError(self._missing_label(index))
        self._lut = label_to_train_lut()

    def _missing_label(self, index: int) -> str:
        path, part = self.label_path(index), self.images[index].parent.parent.name
        if self._coarse(index):
            return f"{path}: label not found; restore gtCoarse/{EXTRA_SPLIT} from the official gtCoarse.zip"
        if self.prepared is not None:
            return f"{path}: label not found; run segrepro data prepare cityscapes --root {self.root}"
        return f"{path}: label not found; restore gtFine/{part} from the official archive"

    def _coarse(self, index: int) -> bool:
        return self.images[index].parent.parent.name == EXTRA_SPLIT

    def __len__(self) -> int:
        return len(self.images)

    def label_path(self, index: int) -> Path:
        """The file the label of ``index`` is read from (prepared trainIds, raw labelIds or coarse labelIds)."""
        img = self.images[index]
        if self._coarse(index):
            return coarse_path(self.root, EXTRA_SPLIT, img.parent.name, stem_of(img), "labelIds")
        base, kind = (self.prepared, "labelTrainIds") if self.prepared is not None else (self.root, "labelIds")
        return gt_path(base, img.parent.parent.name, img.parent.name, stem_of(img), kind)

    def instance_path(self, index: int) -> Path:
        img = self.images[index]
        where = coarse_path if self._coarse(index) else gt_path
        return where(self.root, img.parent.parent.name, img.parent.name, stem_of(img), "instanceIds")

    def __getitem__(self, index: int) -> Any:
        img = self.images[index]
        with Image.open(img) as im:
            sample: dict[str, Any] = {
                "image": np.array(im.convert("RGB")),  # writable, for torch.from_numpy
                "name": stem_of(img),
                "city": img.parent.name,
                "image_path": str(img),
            }
        if self.has_labels:
            with Image.open(self.label_path(index)) as lab:
                label = np.asarray(lab, dtype=np.uint8)
            sample["label"] = label if self.prepared is not None and not self._coarse(index) else self._lut[label]
            if self.with_instances:
                with Image.open(self.instance_path(index)) as inst:
                    sample["instance"] = np.asarray(inst).astype(np.int32)
        return self.transform(sample) if self.transform is not None else sample


# -- synthetic stand-in ------------------------------------------------------------------------------
_ROLES = {
    "road": "ground",
    "sidewalk": "ground",
    "terrain": "ground",
    "sky": "sky",
    "pole": "thin",
    "building": "stuff",
    "wall": "stuff",
    "fence": "stuff",
    "vegetation": "stuff",
    "traffic light": "object",
    "traffic sign": "object",
}  # every other evaluated class (person … bicycle) is an object with instances
_IGNORED = (  # labelIds drawn but not evaluated, as in the real data
    SceneClass(0, "void", required=False),  # unlabeled
    SceneClass(EGO_LABEL_ID, "ego", required=False),
    SceneClass(4, "void", required=False),  # static
    SceneClass(9, "ground", required=False),  # parking
    SceneClass(29, "object", instances=True, required=False),  # caravan
)


def scene_classes() -> tuple[SceneClass, ...]:
    """Scene classes in trainId order (road is the first, most frequent ground) plus ignored labels."""
    evaluated = tuple(
        SceneClass(lab.id, _ROLES.get(lab.name, "object"), instances=bool(lab.hasInstances)) for lab in train_classes()
    )
    return evaluated + _IGNORED


def instance_ids(label: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Official instanceIds: ``labelId*1000+k`` for instances, plain labelId elsewhere (uint16)."""
    return np.where(instance >= 0, label.astype(np.int64) * 1000 + instance, label).astype(np.uint16)


def color_image(label: np.ndarray) -> np.ndarray:
    """RGBA visualisation with the official colour of every labelId."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for lab in LABELS:
        if lab.id >= 0:
            lut[lab.id] = (*lab.color, 255)
    return lut[label]


def polygons(label: np.ndarray, instance: np.ndarray) -> dict[str, Any]:
    """Minimal valid ``*_gtFine_polygons.json``: one bounding-box polygon per class region / instance.

    Boxes come from two ``bincount`` passes (key × row, key × column) instead of one full-image mask per key.
    """
    h, w = label.shape
    key = label.astype(np.int64) * 100000 + (instance + 1)
    keys, dense = _dense_keys(key) if instance.max() < 1023 else np.unique(key, return_inverse=True)
    dense = dense.reshape(h, w)
    n = len(keys)
    rows = np.bincount((dense * h + np.arange(h)[:, None]).ravel(), minlength=n * h).reshape(n, h) > 0
    cols = np.bincount((dense * w + np.arange(w)[None, :]).ravel(), minlength=n * w).reshape(n, w) > 0
    y0, y1 = rows.argmax(1), h - 1 - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), w - 1 - cols[:, ::-1].argmax(1)
    objects = [
        {
            "label": cs_labels.id2label[int(k // 100000)].name,
            "polygon": [
                [int(x0[i]), int(y0[i])],
                [int(x1[i]), int(y0[i])],
                [int(x1[i]), int(y1[i])],
                [int(x0[i]), int(y1[i])],
            ],
        }
        for i, k in enumerate(keys.tolist())
    ]
    return {"imgHeight": int(h), "imgWidth": int(w), "objects": objects}


def _dense_keys(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(key, return_inverse=True) for small non-negative keys, by counting instead of sorting."""
    compact = (key // 100000) * 1024 + key % 100000  # the caller checked: fewer than 1023 instances per class
    present = np.flatnonzero(np.bincount(compact.ravel()))
    lut = np.zeros(present[-1] + 1, dtype=np.int64)
    lut[present] = np.arange(len(present))
    return (present // 1024) * 100000 + present % 1024, lut[compact].ravel()


def withheld_test_label(label: np.ndarray) -> np.ndarray:
    """What the real test labels hold: ego vehicle and a rectification border, unlabeled elsewhere."""
    out = np.where(label == EGO_LABEL_ID, EGO_LABEL_ID, 0).astype(np.uint8)
    b = max(1, label.shape[0] // 128)
    out[:b], out[-b:], out[:, :b], out[:, -b:] = BORDER_LABEL_ID, BORDER_LABEL_ID, BORDER_LABEL_ID, BORDER_LABEL_ID
    return out


def coarse_label(label: np.ndarray) -> np.ndarray:
    """A coarse annotation of ``label``: what gtCoarse leaves out, a band along every class boundary, becomes
    unlabeled (labelId 0); its polygons are rough outlines drawn inside the objects."""
    band = max(1, min(label.shape) // 32)
    edge = np.zeros(label.shape, dtype=bool)
    edge[:-1] |= label[:-1] != label[1:]
    edge[1:] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:, 1:] |= label[:, :-1] != label[:, 1:]
    for _ in range(band - 1):  # grow the band one pixel per pass (4-neighbourhood)
        grown = edge.copy()
        grown[:-1] |= edge[1:]
        grown[1:] |= edge[:-1]
        grown[:, :-1] |= edge[:, 1:]
        grown[:, 1:] |= edge[:, :-1]
        edge = grown
    return np.where(edge, 0, label).astype(np.uint8)


def _write_sample(
    root: Path, split: str, city: str, stem: str, image: np.ndarray, label: np.ndarray, inst: np.ndarray
) -> None:
    where = coarse_path if split == EXTRA_SPLIT else gt_path
    write_png(image_path(root, split, city, stem), image)
    write_png(where(root, split, city, stem, "labelIds"), label.astype(np.uint8))
    write_png(where(root, split, city, stem, "instanceIds"), instance_ids(label, inst))
    write_png(where(root, split, city, stem, "color"), color_image(label))
    where(root, split, city, stem, "polygons").write_text(json.dumps(polygons(label, inst), indent=1) + "\n")


def synth(out: Path, split_sizes: Mapping[str, int], size: tuple[int, int], seed: int) -> Path:
    """Write a synthetic Cityscapes in the official layout, names and encodings; returns ``out``.

    Images cycle through the split's official cities; the same seed gives byte-identical files. A
    ``train_extra`` count adds the coarse set (leftImg8bit/train_extra + gtCoarse/train_extra).
    """
    composer = SceneComposer(scene_classes(), appearance_seed=NAME)
    h, w = size
    with atomic_output_dir(Path(out), replaceable=(IMAGE_DIR, GT_DIR, COARSE_DIR)) as tmp:
        for s, split in enumerate((*SPLITS, EXTRA_SPLIT)):
            count = split_sizes.get(split, 0)
            cities = sorted(OFFICIAL_CITIES[split]) if split in OFFICIAL_CITIES else list(EXTRA_CITIES)
            scenes = composer.compose_split(count, h, w, np.random.default_rng([seed, s]))
            for i, scene in enumerate(tqdm(scenes, total=count, desc=f"synth cityscapes {split}", unit="img")):
                city = cities[i % len(cities)]
                stem = f"{city}_{i // len(cities):06d}_{19:06d}"
                label, inst = scene.label, scene.instance
                if split == "test":
                    label, inst = withheld_test_label(label), np.full_like(inst, -1)
                elif split == EXTRA_SPLIT:
                    label = coarse_label(label)
                    inst = np.where(label == 0, -1, inst)
                _write_sample(tmp, split, city, stem, scene.image, label, inst)
    return Path(out)


def prepare(root: Path, out: Path) -> Path:
    """Validate and write ``*_labelTrainIds.png``, split lists and manifest (see cityscapes_prepare)."""
    from segrepro.data.cityscapes_prepare import prepare_cityscapes

    return prepare_cityscapes(root, out)
