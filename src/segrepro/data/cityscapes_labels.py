"""The Cityscapes label table, taken from cityscapesscripts (never a hand-typed copy).

Everything the pipeline needs is derived here once: labelId→trainId lookup (255 = ignore), the inverse
trainId→labelId map for submissions, class/category names and the instance classes used by nIoU.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

IGNORE_INDEX = 255
LABELS = cs_labels.labels
NUM_LABEL_IDS = 34  # labelIds 0..33 drawn in the PNGs; -1 (license plate) never appears


@lru_cache(maxsize=1)
def train_classes() -> tuple:
    """The 19 evaluated labels ordered by trainId."""
    evaluated = [lab for lab in LABELS if 0 <= lab.trainId < IGNORE_INDEX]
    return tuple(sorted(evaluated, key=lambda lab: lab.trainId))


def class_names() -> list[str]:
    return [lab.name for lab in train_classes()]


def label_to_train_lut() -> np.ndarray:
    """uint8 lookup table of 256 entries: labelId → trainId, everything unknown → 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lab in LABELS:
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.trainId if 0 <= lab.trainId < IGNORE_INDEX else IGNORE_INDEX
    return lut


def label_to_train(label_id: int) -> int:
    """trainId of one labelId (including -1, license plate), 255 when ignored."""
    lab = cs_labels.id2label[label_id]
    return lab.trainId if 0 <= lab.trainId < IGNORE_INDEX else IGNORE_INDEX


def train_to_label_lut() -> np.ndarray:
    """uint8 lookup table of 256 entries: trainId → labelId for submissions (255 → 0, 'unlabeled')."""
    lut = np.zeros(256, dtype=np.uint8)
    for lab in train_classes():
        lut[lab.trainId] = lab.id
    return lut


def instance_class_names() -> list[str]:
    """Evaluated classes with instances (the 8 nIoU classes)."""
    return [lab.name for lab in train_classes() if lab.hasInstances]


def colors() -> np.ndarray:
    """(19, 3) uint8 RGB palette by trainId."""
    return np.array([lab.color for lab in train_classes()], dtype=np.uint8)


def category_names() -> list[str]:
    """The 8 categories in the official table's order (void first), as the evaluator reports them."""
    return list(cs_labels.category2labels)


def category_labels(category: str) -> list:
    """Labels of a category with a drawable id (≥ 0), in table order."""
    return [lab for lab in cs_labels.category2labels[category] if lab.id >= 0]


@lru_cache(maxsize=1)
def avg_instance_size() -> dict[str, float]:
    """The official average instance size per class (pixels), the nIoU weight numerator.

    Read from cityscapesscripts' evaluator module so the constants are never re-typed.
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    return dict(cs_eval.args.avgClassSize)
