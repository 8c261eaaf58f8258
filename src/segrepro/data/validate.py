"""Shared dataset checks and the atomic output-folder writer used by every ``prepare`` and ``synth``.

Why: validation must report *every* problem (one line per file: ``"<path>: <problem>; <fix>"``) before
anything is written, and a run that fails half-way must leave nothing behind, so DVC never tracks a
partial output.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from segrepro.errors import DatasetError, UserError

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", str, tuple[str, str])

DECODE_WORKERS = 2


def problem(path: str | os.PathLike[str], what: str, fix: str) -> str:
    """One problem line: the file, what is wrong, how to fix it."""
    return f"{path}: {what}; {fix}"


def raise_problems(problems: Sequence[str]) -> None:
    """Raise :class:`DatasetError` (exit code 2) when there is at least one problem."""
    if problems:
        raise DatasetError(list(problems))


def read_png(path: Path, modes: Iterable[str], what: str = "label") -> tuple[np.ndarray | None, str | None]:
    """Decode a PNG fully (so truncation is caught) and check its mode; returns (array, None) or
    (None, problem line)."""
    modes = tuple(modes)
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                return None, problem(path, f"{what} is {im.format}, not PNG", "re-export it as PNG")
            if im.mode not in modes:
                return None, problem(
                    path,
                    f"{what} has mode {im.mode}, expected {' or '.join(modes)}",
                    "write it in the official encoding",
                )
            im.load()
            return np.asarray(im), None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's truncated/corrupt errors
        return None, problem(path, f"unreadable or truncated PNG ({err})", "re-extract this file from the archive")


def check_same_size(ref: Path, ref_shape: tuple[int, ...], other: Path, other_shape: tuple[int, ...]) -> str | None:
    """Problem line when two files disagree in height/width."""
    if tuple(ref_shape[:2]) == tuple(other_shape[:2]):
        return None
    return problem(
        other,
        f"size {other_shape[1]}x{other_shape[0]} differs from {ref.name} ({ref_shape[1]}x{ref_shape[0]})",
        "re-extract the pair so image and label match",
    )


def present_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values, like ``np.unique``; 8/16-bit maps are counted (one pass) rather than sorted."""
    if array.dtype in (np.uint8, np.uint16) and array.size:
        return np.flatnonzero(np.bincount(array.ravel())).astype(array.dtype)
    return np.unique(array)


def check_values(path: Path, array: np.ndarray, legal: Callable[[np.ndarray], np.ndarray], what: str) -> str | None:
    """Problem line listing the first illegal values (``legal`` maps unique values to a bool mask)."""
    values = present_values(array)
    bad = values[~legal(values)]
    if len(bad) == 0:
        return None
    shown = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
    return problem(path, f"illegal {what} value(s) {shown}", f"this file must use the {what} encoding")


def pair_problems(
    images: Mapping[K, Path],
    labels: Mapping[K, Path],
    expected_label: Callable[[Path], Path],
    expected_image: Callable[[Path], Path],
) -> list[str]:
    """Image without label and label without image, keyed by a shared stem."""
    out = [
        problem(images[k], "image has no label", f"add {expected_label(images[k])} or remove the image")
        for k in sorted(images.keys() - labels.keys())
    ]
    out += [
        problem(labels[k], "label has no image", f"add {expected_image(labels[k])} or remove the label")
        for k in sorted(labels.keys() - images.keys())
    ]
    return out


def split_count_problems(
    folder: Mapping[str, Path], counts: Mapping[str, int], official: Mapping[str, int] | None
) -> list[str]:
    """Empty splits always; exact official counts when ``official`` is given (the real dataset)."""
    out = []
    for split, n in counts.items():
        if n == 0:
            out.append(problem(folder[split], f"split '{split}' is empty", "add its images or fix the folder name"))
        elif official is not None and split in official and n != official[split]:
            out.append(
                problem(
                    folder[split],
                    f"split '{split}' has {n} images, the official dataset has {official[split]}",
                    "restore the complete split from the official archive",
                )
            )
    return out


def unexpected_entries(folder: Path, allowed: Iterable[str], what: str) -> list[str]:
    """Sub-folders whose names are not in ``allowed`` (typos like ``Train`` or ``leftimg8bit``)."""
    allowed = sorted(allowed)
    if not folder.is_dir():
        return []
    return [
        problem(entry, f"unexpected {what} folder '{entry.name}'", f"rename it to one of {', '.join(allowed)}")
        for entry in sorted(folder.iterdir())
        if entry.is_dir() and entry.name not in allowed and not entry.name.startswith(".")
    ]


def parallel_map(fn: Callable[[T], R], items: Sequence[T], desc: str, workers: int = DECODE_WORKERS) -> list[R]:
    """Ordered map over threads (PNG decode/encode releases the GIL) with a progress bar."""
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in tqdm(items, desc=desc, unit="file")]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, unit="file"))


def process_map(
    fn: Callable[[T], R], items: Sequence[T], desc: str, workers: int | None = None, chunksize: int = 4
) -> list[R]:
    """Ordered map over processes (all cores by default) with a progress bar; ``fn`` must be picklable.

    Why processes: the per-file checks mix PNG decoding with numpy passes and Python work, and threads
    leave cores idle on the parts that hold the GIL. Each worker holds one item at a time, so memory does
    not grow with the dataset; only the (small) results come back.
    """
    workers = max(1, workers or os.cpu_count() or 1)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    out = []
    results: Iterable[R]
    with tqdm(total=len(items), desc=desc, unit="file") as bar, contextlib.ExitStack() as stack:
        if workers == 1 or len(items) < 2:
            results = map(fn, items)
        else:
            results = stack.enter_context(ctx.Pool(min(workers, len(items)))).imap(fn, items, chunksize=chunksize)
        for result in results:
            out.append(result)
            bar.update(1)
    return out


def default_prepared_dir(root: Path) -> Path:
    """Sibling ``<root>_prepared``, so DVC can track raw and prepared data separately."""
    root = Path(root).resolve()
    return root.with_name(f"{root.name}_prepared")


def write_png(path: Path | BinaryIO, array: np.ndarray, compress_level: int = 6) -> None:
    """PNG without timestamps or text chunks, so equal arrays give byte-identical files.

    The mode follows the dtype/shape: uint8 HxW → L, HxWx3 → RGB, HxWx4 → RGBA, uint16 HxW → I;16.
    ``compress_level`` 1 encodes a noisy 1024×2048 RGB image about 20 % faster than 6 for 7 % more bytes.
    """
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=compress_level)


@contextlib.contextmanager
def atomic_output_dir(dst: Path, replaceable: Iterable[str]) -> Iterator[Path]:
    """Build a folder in a temp dir beside ``dst`` and rename it into place only on success.

    An existing ``dst`` is replaced only if it holds nothing but ``replaceable`` names (a previous
    output of the same command); anything else is refused so user files are never deleted.
    """
    dst = Path(dst).resolve()
    if dst.exists():
        if not dst.is_dir():
            raise UserError(f"{dst}: exists and is not a folder; choose another output path")
        foreign = sorted(p.name for p in dst.iterdir() if p.name not in set(replaceable))
        if foreign:
            raise UserError(
                f"{dst}: output folder holds other files ({', '.join(foreign[:5])}); choose an empty or new folder"
            )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        yield tmp
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, old / dst.name)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
