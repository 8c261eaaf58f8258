"""What VOC, COCO-Stuff, PASCAL Context and ADE20K share: JPEG image + 8-bit PNG label pairs.

Why one module: the four readers differ only in layout, list files and the raw → train-id lookup
table, so the reader, the per-pair checks of ``prepare``, the prepared-output writer and the synthetic
writer live here once; each dataset module supplies its layout and class table.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from segrepro.data.manifest import MANIFEST_NAME, sha256_file, write_manifest
from segrepro.data.synth_scene import Scene, SceneComposer
from segrepro.data.transforms import IGNORE_INDEX
from segrepro.data.validate import (
    atomic_output_dir,
    check_same_size,
    check_values,
    pair_problems,
    parallel_map,
    problem,
    read_png,
)
from segrepro.errors import UserError

Transform = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Pair:
    name: str
    image: Path
    label: Path


def shift_lut(num_raw: int) -> np.ndarray:
    """ "reduce_zero_label": raw 0 → 255 (ignore), v → v−1 for v in 1..num_raw−1, 255 stays 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[1:num_raw] = np.arange(num_raw - 1, dtype=np.uint8)
    return lut


def identity_lut(num_classes: int) -> np.ndarray:
    """Values 0..num_classes−1 kept, everything else (the 255 void band) → 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[:num_classes] = np.arange(num_classes, dtype=np.uint8)
    return lut


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class PairedDataset(Dataset):
    """Sample = ``{"image": HxWx3 uint8 RGB, "label": HxW uint8 train ids (255 ignore), "name": id}``."""

    num_classes: int
    class_names: tuple[str, ...]
    ignore_index = IGNORE_INDEX

    def __init__(self, pairs: Sequence[Pair], lut: np.ndarray, transform: Transform | None, where: Path) -> None:
        if not pairs:
            raise UserError(
                f"{where}: no image/label pairs found; check the dataset root (segrepro data prepare validates it)"
            )
        self.pairs, self.lut, self.transform = list(pairs), lut, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        pair = self.pairs[index]
        with Image.open(pair.label) as lab:
            label = self.lut[np.asarray(lab, dtype=np.uint8)]
        sample = {"image": read_rgb(pair.image), "label": label, "name": pair.name}
        return self.transform(sample) if self.transform is not None else sample


# -- list files --------------------------------------------------------------------------------------
def read_ids(path: Path) -> list[str]:
    """One id per line; only the first whitespace-separated token counts, blank lines are skipped."""
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def list_problems(list_path: Path, ids: Sequence[str], folders: Mapping[Path, str]) -> list[str]:
    """Ids of ``list_path`` whose file is missing in one of ``folders`` (folder → extension)."""
    out = []
    for folder, ext in folders.items():
        for i in ids:
            if not (folder / f"{i}{ext}").is_file():
                out.append(
                    problem(
                        folder / f"{i}{ext}",
                        f"listed in {list_path.name} but missing",
                        f"restore it or drop '{i}' from {list_path}",
                    )
                )
    if not ids:
        out.append(problem(list_path, "list file is empty", "write one image id per line"))
    return out


def folder_pairs(image_dir: Path, label_dir: Path) -> tuple[list[Pair], list[str]]:
    """Pairs by stem of ``*.jpg`` / ``*.png`` in two folders, plus one problem per orphan."""
    images = {p.stem: p for p in image_dir.glob("*.jpg")} if image_dir.is_dir() else {}
    labels = {p.stem: p for p in label_dir.glob("*.png")} if label_dir.is_dir() else {}
    problems = pair_problems(
        images, labels, lambda p: label_dir / f"{p.stem}.png", lambda p: image_dir / f"{p.stem}.jpg"
    )
    return [Pair(k, images[k], labels[k]) for k in sorted(images.keys() & labels.keys())], problems


# -- prepare -----------------------------------------------------------------------------------------
def _read_jpeg(path: Path) -> tuple[np.ndarray | None, str | None]:
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                return None, problem(path, f"image is {im.format}, not JPEG", "use the official JPEG file")
            im.load()
            return np.asarray(im.convert("RGB")), None
    except (OSError, SyntaxError, ValueError) as err:
        return None, problem(path, f"unreadable or truncated JPEG ({err})", "re-extract this file from the archive")


def check_pairs(
    pairs: Sequence[Pair], modes: Sequence[str], legal: np.ndarray, encoding: str, root: Path, desc: str
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Decode every pair fully: JPEG readable, label PNG in ``modes``, same size, values with ``legal[v]``.

    Also returns sha256 + size of every source file (keyed relative to ``root``) for the manifest, so a
    later change to the raw data is detectable even outside DVC.
    """

    def check(pair: Pair) -> tuple[list[str], dict[str, dict[str, Any]]]:
        image, err_i = _read_jpeg(pair.image)
        label, err_l = read_png(pair.label, modes)
        out = [e for e in (err_i, err_l) if e]
        if image is not None and label is not None:
            out += [
                e
                for e in (
                    check_same_size(pair.image, image.shape, pair.label, label.shape),
                    check_values(pair.label, label, lambda v: legal[v], encoding),
                )
                if e
            ]
        files = {
            p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in (pair.image, pair.label)
            if p.is_file()
        }
        return out, files

    problems: list[str] = []
    sources: dict[str, dict[str, Any]] = {}
    for probs, files in parallel_map(check, list(pairs), desc=desc):
        problems += probs
        sources.update(files)
    return problems, sources


def write_prepared(
    out: Path,
    dataset: str,
    lists: Mapping[str, Sequence[str]],
    extra: Mapping[str, Any],
    derived: tuple[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Atomically write ``{split}.txt`` id lists, optional derived files (``(folder name, writer(tmp))``)
    and ``manifest.json`` (sha256 + size of every written file)."""
    names = [f"{split}.txt" for split in lists] + ([derived[0]] if derived else [])
    with atomic_output_dir(Path(out), replaceable=(*names, MANIFEST_NAME)) as tmp:
        for split, ids in lists.items():
            (tmp / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        if derived:
            derived[1](tmp)
        write_manifest(tmp, dataset, {s: len(ids) for s, ids in lists.items()}, extra)
    return Path(out)


# -- synth -------------------------------------------------------------------------------------------
def write_jpeg(path: Path, image: np.ndarray) -> None:
    """Baseline JPEG, fixed quality, no metadata: same pixels give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGB").save(path, format="JPEG", quality=95, subsampling=0)


def synth_scenes(
    composer: SceneComposer,
    name: str,
    split_sizes: Mapping[str, int],
    splits: Sequence[str],
    size: tuple[int, int],
    seed: int,
) -> Iterator[tuple[str, int, Scene]]:
    """(split, index, scene) for every split in ``splits`` order; each split covers every required class."""
    for s, split in enumerate(splits):
        count = split_sizes.get(split, 0)
        scenes = composer.compose_split(count, size[0], size[1], np.random.default_rng([seed, s]))
        for i, scene in enumerate(tqdm(scenes, total=count, desc=f"synth {name} {split}", unit="img")):
            yield split, i, scene


def missing_dirs(base: Path, names: Sequence[str]) -> list[str]:
    """One problem per required sub-folder that is absent, suggesting a near-miss name if one exists."""
    present = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    out = []
    for name in names:
        if (base / name).is_dir():
            continue
        near = difflib.get_close_matches(name, present, n=1, cutoff=0.7)
        fix = f"rename {base / near[0]} to {name}" if near else "extract it from the official archive"
        out.append(problem(base / name, "required folder is missing", fix))
    return out
