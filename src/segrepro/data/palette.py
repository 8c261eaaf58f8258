"""Class colours per dataset, for overlays and colour PNGs: each dataset's official palette.

Cityscapes: cityscapesscripts' label table (by trainId). VOC: the devkit colour map. The other datasets
ship no palette of their own in their official tools, so they take the VOC colour map over their class
count (distinct, stable colours; documented in the README).
"""

from __future__ import annotations

import numpy as np

from segrepro.data import get_spec


def voc_colour_map(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: the VOC devkit map (bits of the index spread over R, G, B from the high bit down)."""
    from segrepro.data.voc import voc_palette

    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)[:n]


def class_palette(dataset: str) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colour of each class id (trainId for Cityscapes)."""
    if dataset == "cityscapes":
        from segrepro.data import cityscapes_labels

        return cityscapes_labels.colors()
    return voc_colour_map(get_spec(dataset).num_classes)


def colourise(label: np.ndarray, dataset: str, label_ids: bool = False) -> np.ndarray:
    """HxW class ids → HxWx3 RGB in the dataset's palette; ignore (255) and unknown ids are black.

    ``label_ids``: the map holds Cityscapes labelIds (``*_gtFine_labelIds.png``), mapped to trainIds first.
    """
    from segrepro.data import cityscapes_labels

    ids = np.asarray(label).astype(np.int64)
    palette = class_palette(dataset)
    if label_ids:
        ids = cityscapes_labels.label_to_train_lut()[np.clip(ids, 0, 255)].astype(np.int64)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = palette
    return lut[np.clip(ids, 0, 255)]
