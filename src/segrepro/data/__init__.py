"""segrepro.data: readers, synthetic stand-ins and ``prepare`` for every dataset, behind one table.

Each dataset module provides ``synth(out, split_sizes, size, seed) -> Path`` (``split_sizes`` maps split
name → count, ``size`` is (H, W)), ``prepare(root, out) -> Path``, ``CLASS_NAMES`` and a
``torch.utils.data.Dataset`` class built as ``cls(root, split, **kwargs)``. Modules are imported lazily so
that ``segrepro --help`` stays fast and one broken reader cannot break the others.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from segrepro.data.validate import default_prepared_dir
from segrepro.errors import UserError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    module_name: str  # dotted module path implementing synth / prepare / CLASS_NAMES
    dataset_class_name: str
    num_classes: int
    ignore_index: int
    splits: tuple[str, ...]  # split order used by --split-sizes
    default_split_sizes: tuple[int, ...]
    default_size: tuple[int, int]  # (H, W) of synthetic images
    combined_splits: tuple[str, ...] = ()  # training splits made of several (Cityscapes trainval)
    extra_splits: tuple[str, ...] = ()  # optional, after ``splits`` in --split-sizes (Cityscapes train_extra)

    @property
    def all_splits(self) -> tuple[str, ...]:
        return self.splits + self.extra_splits + self.combined_splits

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    @property
    def dataset_class(self) -> type:
        return getattr(self.module, self.dataset_class_name)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.module.CLASS_NAMES)


DATASETS: dict[str, DatasetSpec] = {
    "cityscapes": DatasetSpec(
        "cityscapes",
        "segrepro.data.cityscapes",
        "CityscapesDataset",
        19,
        255,
        ("train", "val", "test"),
        (8, 4, 4),
        (256, 512),
        ("trainval", "trainval_coarse"),
        ("train_extra",),
    ),
    "voc": DatasetSpec("voc", "segrepro.data.voc", "VOCDataset", 21, 255, ("trainaug", "val"), (8, 4), (256, 320)),
    "coco_stuff27": DatasetSpec(
        "coco_stuff27", "segrepro.data.coco_stuff", "CocoStuff27Dataset", 27, 255, ("train", "val"), (8, 4), (256, 320)
    ),
    "pascal_context": DatasetSpec(
        "pascal_context",
        "segrepro.data.pascal_context",
        "PascalContextDataset",
        59,
        255,
        ("train", "val"),
        (8, 4),
        (256, 320),
    ),
    "ade20k": DatasetSpec(
        "ade20k", "segrepro.data.ade20k", "ADE20KDataset", 150, 255, ("train", "val"), (8, 4), (256, 256)
    ),
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset '{name}'; choose one of {', '.join(sorted(DATASETS))}") from None


def parse_size(text: str) -> tuple[int, int]:
    """``"256x512"`` → (256, 512), i.e. HxW."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size '{text}' is not HxW (e.g. 256x512)") from None
    if h < 16 or w < 16:
        raise UserError(f"--size '{text}' is too small; use at least 16x16")
    return h, w


def parse_split_sizes(spec: DatasetSpec, text: str) -> dict[str, int]:
    """``"8,4,4"`` → {train: 8, val: 4, test: 4} in the dataset's split order; optional splits may follow
    (Cityscapes ``"8,4,4,6"`` adds 6 coarse train_extra images)."""
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    names = spec.splits + spec.extra_splits
    if not len(spec.splits) <= len(sizes) <= len(names) or min(sizes) < 1:
        optional = f" (then optionally {'/'.join(spec.extra_splits)})" if spec.extra_splits else ""
        raise UserError(
            f"--split-sizes '{text}' must be {len(spec.splits)} positive integers for {'/'.join(spec.splits)}{optional}"
        )
    return dict(zip(names, sizes, strict=False))


def synth_dataset(
    name: str,
    out: Path,
    split_sizes: str | dict[str, int] | None = None,
    size: str | tuple[int, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset in the official layout of ``name``; returns the output folder."""
    spec = get_spec(name)
    sizes = dict(zip(spec.splits, spec.default_split_sizes, strict=False)) if split_sizes is None else split_sizes
    if isinstance(sizes, str):
        sizes = parse_split_sizes(spec, sizes)
    hw = spec.default_size if size is None else parse_size(size) if isinstance(size, str) else size
    return spec.module.synth(Path(out), sizes, hw, seed)


def prepare_dataset(name: str, root: Path, out: Path | None = None) -> Path:
    """Validate ``root`` (raising DatasetError, exit 2) and write the prepared outputs; returns ``out``."""
    spec = get_spec(name)
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset root not found; pass the folder that holds the {name} data")
    return spec.module.prepare(root, Path(out) if out is not None else default_prepared_dir(root))


def get_dataset(name: str, root: Path, split: str, **kwargs: Any) -> Any:
    """The reader of ``name`` for one split, e.g. ``get_dataset("cityscapes", root, "val", prepared=p)``."""
    return get_spec(name).dataset_class(Path(root), split, **kwargs)
