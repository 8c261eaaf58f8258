"""Check a test-server archive against the images on disk, trusting nothing inside it.

Every problem becomes one line; :func:`check_archive` returns them all and :func:`validate_archive`
raises :class:`SubmissionError` (first 20 + a count, exit code 2) when there is any. Rules (reference
cityscapes_eval_and_submission.md §3): exactly one ``<city>_<seq>_<frame>*.png`` per image of the split,
8-bit single channel (``L`` or ``P``), the image's size, values among the evaluated labelIds; no absolute
or ``..`` names, symlinks, nested archives, encrypted members or other files (the manifest included);
bounded sizes. Entries are read one at a time and decoded on all cores with at most two per core in flight,
so memory does not grow with the archive.
"""

from __future__ import annotations

import collections
import io
import os
import re
import stat
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from segrepro.data import cityscapes_labels
from segrepro.data.cityscapes import IMAGE_DIR, IMAGE_SUFFIX, stem_of
from segrepro.data.png import decode_png
from segrepro.data.validate import present_values
from segrepro.errors import DatasetError, UserError
from segrepro.submission.build import MANIFEST

NAME_PATTERN = re.compile(r"^([a-z]+)_(\d{6})_(\d{6}).*\.png$")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_ARCHIVE_BYTES = 500 * 2**20  # the server's limit is undocumented; 1525 label PNGs are tens of MB
MAX_MEMBER_BYTES = 16 * 2**20  # uncompressed; a 2048×1024 8-bit PNG is at most ~2 MB
EVALUATED_IDS = frozenset(int(lab.id) for lab in cityscapes_labels.train_classes())


class SubmissionError(DatasetError):
    """The archive breaks the submission format; ``problems`` lists each finding."""


@dataclass(frozen=True)
class ArchiveSummary:
    predictions: int
    archive_bytes: int


def split_images(data_root: Path, split: str = "test") -> dict[str, Path]:
    """Image stem → image path for every ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` under ``data_root``."""
    images = {stem_of(p): p for p in sorted((Path(data_root) / IMAGE_DIR / split).glob(f"*/*{IMAGE_SUFFIX}"))}
    if not images:
        raise UserError(
            f"{Path(data_root) / IMAGE_DIR / split}: no *{IMAGE_SUFFIX} images; point --data at the "
            "Cityscapes root that holds the split"
        )
    return images


def _unsafe_name(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if "\\" in name:
        return "backslash in name"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return "path traversal (..)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted member"
    return None


def _check_against_image(name: str, data: bytes, image: Path) -> list[str]:
    """:func:`_check_png` at the size of its test image, read in the worker (a header read per file)."""
    return _check_png(name, data, _image_size(image))


def _check_png(name: str, data: bytes, size: tuple[int, int]) -> list[str]:
    if not data.startswith(PNG_MAGIC):
        return [f"{name}: not a PNG file (use 8-bit PNG, no JPEG)"]
    fast = decode_png(data)
    array: np.ndarray | None
    if fast is not None:
        array, mode = fast
    else:
        try:
            with Image.open(io.BytesIO(data)) as im:
                mode = im.mode
                array = np.asarray(im) if mode in ("L", "P") else None
        except Exception as err:  # truncated or corrupt PNG
            return [f"{name}: unreadable PNG ({type(err).__name__})"]
    if mode not in ("L", "P") or array is None:
        return [f"{name}: mode {mode}; the server needs one 8-bit channel (mode L), not colour or 16-bit"]
    values = present_values(array)
    im_size = (array.shape[1], array.shape[0])
    problems = []
    if im_size != size:
        problems.append(
            f"{name}: size {im_size[0]}x{im_size[1]}, its image is {size[0]}x{size[1]} (full resolution needed)"
        )
    bad = sorted(set(values.tolist()) - EVALUATED_IDS)
    if bad:
        hint = " (trainIds? convert with train_to_label_lut)" if int(values.max()) <= 18 else ""
        problems.append(f"{name}: values {bad[:8]} are not evaluated labelIds{hint}")
    return problems


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:  # reads the header only
        return im.size


def check_archive(
    archive: Path, data_root: Path, split: str = "test", max_bytes: int = MAX_ARCHIVE_BYTES
) -> tuple[list[str], ArchiveSummary]:
    """All problems of ``archive`` against ``data_root``'s split, and what it held."""
    archive = Path(archive)
    images = split_images(data_root, split)
    if not archive.is_file():
        raise UserError(f"{archive}: no such archive")
    total = archive.stat().st_size
    problems: list[str] = []
    if total > max_bytes:
        problems.append(f"{archive}: {total} bytes, over the {max_bytes}-byte limit")
    if not zipfile.is_zipfile(archive):
        return problems + [f"{archive}: not a zip archive"], ArchiveSummary(0, total)
    found: dict[str, list[str]] = {}
    workers = os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=workers)  # zlib-ng and the numba unfilter release the GIL
    pending: collections.deque = collections.deque()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename
                unsafe = _unsafe_name(info)
                if unsafe:
                    problems.append(f"{name}: {unsafe}")
                    continue
                if info.is_dir():
                    continue
                base = PurePosixPath(name).name
                if base.lower().endswith(ARCHIVE_SUFFIXES):
                    problems.append(f"{name}: nested archive")
                    continue
                if info.file_size > MAX_MEMBER_BYTES:
                    problems.append(f"{name}: {info.file_size} bytes uncompressed, over {MAX_MEMBER_BYTES}")
                    continue
                data = zf.read(info)
                if data.startswith(ARCHIVE_MAGIC):
                    problems.append(f"{name}: nested archive")
                    continue
                if name == MANIFEST:
                    problems.append(
                        f"{name}: the archive must hold only the prediction PNGs; keep the manifest "
                        "beside it (segrepro submit package writes X.zip.manifest.json)"
                    )
                    continue
                match = NAME_PATTERN.match(base)
                if not match:
                    problems.append(f"{name}: not named <city>_<seq:06d>_<frame:06d>*.png")
                    continue
                stem = "_".join(match.groups())
                if stem not in images:
                    problems.append(f"{name}: no {split} image {stem}")
                    continue
                found.setdefault(stem, []).append(name)
                # Decode on all cores; at most 2 per worker in flight, so memory stays bounded.
                while len(pending) >= 2 * workers:
                    problems.extend(pending.popleft().result())
                pending.append(pool.submit(_check_against_image, name, data, images[stem]))
            while pending:
                problems.extend(pending.popleft().result())
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as err:
        problems.append(f"{archive}: corrupt archive ({err})")
    finally:
        pool.shutdown(cancel_futures=True)
    for stem, names in sorted(found.items()):
        if len(names) > 1:
            problems.append(f"{stem}: {len(names)} predictions match ({', '.join(names)}); exactly one is allowed")
    missing = [s for s in images if s not in found]
    problems += [f"{s}: no prediction ({len(missing)} of {len(images)} {split} images missing)" for s in missing]
    return problems, ArchiveSummary(len(found), total)


def validate_archive(
    archive: Path, data_root: Path, split: str = "test", max_bytes: int = MAX_ARCHIVE_BYTES
) -> ArchiveSummary:
    """Raise :class:`SubmissionError` listing every problem; return the summary of a valid archive."""
    problems, summary = check_archive(archive, data_root, split, max_bytes)
    if problems:
        raise SubmissionError(problems)
    return summary
