"""``segrepro data prepare cityscapes``: validate the official layout, then write the derived outputs.

Outputs (a DVC-tracked sibling folder): ``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png`` (labelIds
PNG remapped with cityscapesscripts' table, datasets.md §1.3), ``lists/<split>.txt`` in the supervised
AlignSeg format (tab-separated image / labelIds paths relative to the raw root; test image-only) and
``manifest.json``. Structure is checked first (cheap); file contents are checked while converting into a
temp folder that is discarded if any problem turns up, so a broken dataset leaves nothing behind.

Scale: the per-image work runs in a process pool on all cores, one triple per worker at a time (memory does
not grow with the dataset), and each output's sha256 comes from its encoded bytes. The manifest also records
the size and mtime of every input (``sources``) and output, so a rerun on unchanged data reuses the outputs
without decoding anything (linear in files either way; a rerun only stats them).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segrepro.data import cityscapes as cs
from segrepro.data.cityscapes_labels import label_to_train_lut
from segrepro.data.manifest import MANIFEST_NAME, write_manifest
from segrepro.data.validate import (
    atomic_output_dir,
    check_same_size,
    check_values,
    pair_problems,
    problem,
    process_map,
    raise_problems,
    read_png,
    split_count_problems,
    unexpected_entries,
    write_png,
)
from segrepro.io import atomic_write_text

_IMAGE_RE = re.compile(r"^(?P<city>[a-z][a-z_]*)_\d{6}_\d{6}_leftImg8bit\.png$")
_GT_RE = re.compile(
    r"^(?P<city>[a-z][a-z_]*)_\d{6}_\d{6}_gtFine_(?:" + "|".join(k for k in cs.GT_KINDS) + r")\.(?:png|json)$"
)
_OUTPUTS = (cs.GT_DIR, "lists", "manifest.json")
_INSTANCE_BASES = np.array(sorted(cs.INSTANCE_LABEL_IDS))
_CS_VERSION = importlib.metadata.version("cityscapesscripts")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    split: str
    city: str
    stem: str


def _scan_split(
    root: Path, top: str, split: str, pattern: re.Pattern[str], problems: list[str]
) -> dict[str, list[Path]]:
    """Files of one split by city; wrong names, stray files and city mismatches become problems."""
    folder = root / top / split
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        problems.append(
            problem(folder, f"split folder '{split}' is missing", f"restore {top}/{split} from the official archive")
        )
        return found
    for city_dir in sorted(folder.iterdir()):
        if not city_dir.is_dir():
            problems.append(problem(city_dir, "file outside a city folder", f"move it into {top}/{split}/<city>/"))
            continue
        files = found.setdefault(city_dir.name, [])
        for f in sorted(city_dir.iterdir()):
            match = pattern.match(f.name)
            if match is None:
                problems.append(
                    problem(
                        f,
                        "file name does not follow the official <city>_<seq>_<frame>_<type> pattern",
                        "rename or remove it",
                    )
                )
            elif match["city"] != city_dir.name:
                problems.append(
                    problem(
                        f,
                        f"city prefix '{match['city']}' does not match folder '{city_dir.name}'",
                        f"move it to {top}/{split}/{match['city']}/",
                    )
                )
            else:
                files.append(f)
    return found


def _structure(root: Path) -> tuple[list[Record], dict[str, int], list[str]]:
    """Folder names, file names, image↔label pairing, split counts and (for the real set) cities."""
    problems: list[str] = []
    for top in (cs.IMAGE_DIR, cs.GT_DIR):
        if not (root / top).is_dir():
            near = [p.name for p in root.iterdir() if p.is_dir() and p.name.lower() == top.lower()]
            fix = f"rename {near[0]} to {top}" if near else f"extract the official {top} archive here"
            problems.append(problem(root / top, "folder missing", fix))
        allowed = set(cs.SPLITS) | ({"train_extra"} if top == cs.IMAGE_DIR else set())
        problems += unexpected_entries(root / top, allowed, "split")
    if problems:
        return [], {}, problems
    records: list[Record] = []
    counts: dict[str, int] = {}
    city_counts: dict[str, dict[str, int]] = {}
    for split in cs.SPLITS:
        images = _scan_split(root, cs.IMAGE_DIR, split, _IMAGE_RE, problems)
        gts = _scan_split(root, cs.GT_DIR, split, _GT_RE, problems)
        img = {(c, cs.stem_of(p)): p for c, ps in images.items() for p in ps}
        for kind in ("labelIds", "instanceIds"):
            lab = {(c, cs.stem_of(p)): p for c, ps in gts.items() for p in ps if p.name.endswith(cs.GT_KINDS[kind])}
            problems += pair_problems(
                img,
                lab,
                functools.partial(_expected_gt, root, split, kind),
                functools.partial(_expected_image, root, split),
            )
        records += [Record(split, c, s) for c, s in sorted(img)]
        counts[split] = len(img)
        city_counts[split] = {c: len(ps) for c, ps in images.items()}
    folders = {s: root / cs.IMAGE_DIR / s for s in cs.SPLITS}
    real = any(counts[s] >= cs.OFFICIAL_COUNTS[s] for s in cs.SPLITS)
    problems += split_count_problems(folders, counts, cs.OFFICIAL_COUNTS if real else None)
    if real:
        problems += _city_problems(folders, city_counts)
    return records, counts, problems


def _city_problems(folders: dict[str, Path], city_counts: dict[str, dict[str, int]]) -> list[str]:
    """Exact official city lists and per-city counts (only checked for the real dataset)."""
    out = []
    for split, official in cs.OFFICIAL_CITIES.items():
        have = city_counts.get(split, {})
        for city in sorted(have.keys() - official.keys()):
            out.append(
                problem(
                    folders[split] / city,
                    f"'{city}' is not an official {split} city",
                    "move it to its own split or remove it",
                )
            )
        for city in sorted(official.keys() & have.keys()):
            if have[city] != official[city]:
                out.append(
                    problem(
                        folders[split] / city,
                        f"{have[city]} images, the official set has {official[city]}",
                        "restore the complete city folder",
                    )
                )
        for city in sorted(official.keys() - have.keys()):
            out.append(
                problem(
                    folders[split] / city,
                    f"official {split} city '{city}' is missing",
                    "restore it from the official archive",
                )
            )
    return out


def _legal_instance(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.int64)
    return (values <= cs.MAX_LABEL_ID) | ((values >= 1000) & np.isin(values // 1000, _INSTANCE_BASES))


def _inputs(root: Path, rec: Record) -> tuple[Path, Path, Path]:
    return (
        cs.image_path(root, rec.split, rec.city, rec.stem),
        cs.gt_path(root, rec.split, rec.city, rec.stem, "labelIds"),
        cs.gt_path(root, rec.split, rec.city, rec.stem, "instanceIds"),
    )


def _output(rec: Record) -> str:
    """The labelTrainIds file of ``rec``, relative to the prepared folder (its manifest key)."""
    return cs.gt_path(Path(), rec.split, rec.city, rec.stem, "labelTrainIds").as_posix()


def _convert(root: Path, out: Path, lut: np.ndarray, rec: Record) -> tuple[list[str], str | None]:
    """Check one image / labelIds / instanceIds triple and write its labelTrainIds.

    Returns (problems, sha256 of the written file): the digest comes from the encoded bytes, so the
    manifest never reads the file back.
    """
    img_p, lab_p, inst_p = _inputs(root, rec)
    image, p_img = read_png(img_p, ("RGB",), "image")
    label, p_lab = read_png(lab_p, ("L",), "labelIds")
    inst, p_inst = read_png(inst_p, ("I;16", "I;16B", "I"), "instanceIds")
    problems: list[str | None] = [p for p in (p_img, p_lab, p_inst) if p]
    if label is not None:
        problems.append(check_values(lab_p, label, lambda v: v <= cs.MAX_LABEL_ID, "labelIds"))
        if image is not None:
            problems.append(check_same_size(img_p, image.shape, lab_p, label.shape))
    if inst is not None:
        problems.append(check_values(inst_p, inst, _legal_instance, "instanceIds"))
        if image is not None:
            problems.append(check_same_size(img_p, image.shape, inst_p, inst.shape))
        if label is not None and inst.shape == label.shape and not any(problems):
            n = _instance_disagreements(label, inst)
            problems.append(
                problem(inst_p, f"{n} pixels disagree with {lab_p.name}", "re-extract both files") if n else None
            )
    found = [p for p in problems if p]
    if found or label is None:
        return found, None
    buf = io.BytesIO()
    write_png(buf, lut[label])
    data = buf.getvalue()
    dst = out / _output(rec)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return [], hashlib.sha256(data).hexdigest()


def _expected_gt(root: Path, split: str, kind: str, image: Path) -> Path:
    return cs.gt_path(root, split, image.parent.name, cs.stem_of(image), kind).relative_to(root)


def _expected_image(root: Path, split: str, label: Path) -> Path:
    return cs.image_path(root, split, label.parent.name, cs.stem_of(label)).relative_to(root)


def _instance_disagreements(label: np.ndarray, inst: np.ndarray) -> int:
    """Pixels whose instanceId does not encode their labelId (``id`` or ``id*1000+k``)."""
    base = inst if inst.max(initial=0) < 1000 else np.where(inst >= 1000, inst // 1000, inst)
    return int(np.count_nonzero(base != label))


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _reusable(root: Path, old_out: Path, previous: dict, rec: Record) -> str | None:
    """The previous output's sha256 when the three inputs and the output still have the size and mtime
    the previous manifest recorded (so nothing needs decoding); otherwise None."""
    sources = previous.get("sources", {})
    for path in _inputs(root, rec):
        key = path.relative_to(root).as_posix()
        if key not in sources or _stat_key(path) != sources[key]:
            return None
    entry = previous.get("files", {}).get(_output(rec))
    if not entry or _stat_key(old_out / _output(rec)) != [entry["size"], entry.get("mtime_ns")]:
        return None
    return entry["sha256"]


def _previous_manifest(out: Path) -> dict:
    """The manifest a previous run left in ``out``, when it was written by this converter; else {}."""
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    same = manifest.get("dataset") == cs.NAME and manifest.get("cityscapesscripts") == _CS_VERSION
    return manifest if same and isinstance(manifest.get("sources"), dict) else {}


def _link(src: Path, dst: Path) -> None:
    """Carry an unchanged output into the new folder: a hard link keeps its bytes and mtime without a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_lists(out: Path, records: list[Record]) -> None:
    lists: dict[str, list[str]] = {split: [] for split in (*cs.SPLITS, "trainval")}
    for rec in records:
        img = cs.image_path(Path(), rec.split, rec.city, rec.stem).as_posix()
        lab = cs.gt_path(Path(), rec.split, rec.city, rec.stem, "labelIds").as_posix()
        line = img if rec.split == "test" else f"{img}\t{lab}"
        lists[rec.split].append(line)
        if rec.split in ("train", "val"):
            lists["trainval"].append(line)
    for split, lines in lists.items():
        atomic_write_text(out / "lists" / f"{split}.txt", "".join(f"{line}\n" for line in lines))


def prepare_cityscapes(root: Path, out: Path, workers: int | None = None) -> Path:
    """Validate ``root`` (DatasetError listing every problem) and write the prepared folder ``out``.

    A rerun reuses every output whose inputs and output keep the size and mtime of the previous manifest
    (hard-linked into the new folder, never decoded); the rest is checked and converted on all cores.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    records, counts, problems = _structure(root)
    raise_problems(problems)
    lut = label_to_train_lut()
    previous = _previous_manifest(out)
    with atomic_output_dir(out, replaceable=_OUTPUTS) as tmp:
        known: dict[str, str] = {}
        todo = []
        for rec in records:
            digest = _reusable(root, out, previous, rec) if previous else None
            if digest is None:
                todo.append(rec)
            else:
                _link(out / _output(rec), tmp / _output(rec))
                known[_output(rec)] = digest
        if previous:
            log.info(
                "prepare cityscapes: %d of %d images unchanged since the manifest (size and mtime match): "
                "skipped; %d to check and convert",
                len(records) - len(todo),
                len(records),
                len(todo),
            )
        results = process_map(
            functools.partial(_convert, root, tmp, lut), todo, desc="prepare cityscapes", workers=workers
        )
        raise_problems([p for ps, _ in results for p in ps])
        known.update({_output(rec): digest for rec, (_, digest) in zip(todo, results, strict=True) if digest})
        _write_lists(tmp, records)
        sources = {path.relative_to(root).as_posix(): _stat_key(path) for rec in records for path in _inputs(root, rec)}
        write_manifest(
            tmp,
            cs.NAME,
            counts,
            {
                "label_source": "gtFine labelIds remapped with cityscapesscripts.helpers.labels (trainId, 255 ignore)",
                "cityscapesscripts": _CS_VERSION,
                "lists": "image<TAB>labelIds paths relative to the dataset root; test is image-only",
                "sources": sources,
            },
            known,
        )
    return out
