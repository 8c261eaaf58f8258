"""Cityscapes test-server archive: one 8-bit labelId PNG per test image, zipped flat, with a manifest.

Format (reference cityscapes_eval_and_submission.md §3): pixel values are **labelIds** (not trainIds),
the PNG has the image's full size and mode ``L``, and is named after its image
(``berlin_000000_000019_leftImg8bit.png``) so exactly one file matches ``<city>_<seq>_<frame>*.png``.
The archive holds the PNGs at its root plus ``manifest.json`` (method, checkpoint sha256, protocol, git SHA).

Resumable: PNGs go to a staging folder beside the archive (``X.zip.parts/``), each written atomically; a
rerun skips the images already there. The zip is written to a temp file and renamed into place.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segrepro.errors import UserError
from segrepro.io import atomic_path, atomic_write_text

MANIFEST = "manifest.json"
PREDICTION_SUFFIX = "_leftImg8bit.png"


def staging_dir(out_zip: Path) -> Path:
    return out_zip.with_name(out_zip.name + ".parts")


def prediction_name(stem: str) -> str:
    """The archive name of the prediction for image ``stem`` (the input image's own name)."""
    return f"{stem}{PREDICTION_SUFFIX}"


def open_staging(out_zip: Path, manifest: dict[str, Any]) -> Path:
    """Create or reuse the staging folder; refuse one left by a different model or protocol."""
    stage = staging_dir(out_zip)
    stage.mkdir(parents=True, exist_ok=True)
    previous = stage / MANIFEST
    if previous.is_file():
        old = json.loads(previous.read_text())
        keys = ("method", "checkpoint_sha256", "protocol", "split")
        if any(old.get(k) != manifest.get(k) for k in keys):
            raise UserError(
                f"{stage}: holds predictions of another run ({', '.join(f'{k}={old.get(k)}' for k in keys)}); "
                "delete that folder or choose another --out"
            )
    atomic_write_text(previous, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return stage


def write_archive(stage: Path, names: Iterable[str], out_zip: Path) -> Path:
    """Zip ``names`` (PNG files in ``stage``) plus the manifest, atomically; then drop the staging folder."""
    names = sorted(names)
    missing = [n for n in names if not (stage / n).is_file()]
    if missing:
        raise UserError(f"{stage}: {len(missing)} prediction(s) missing (first: {missing[0]}); rerun to finish them")
    with atomic_path(out_zip) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are already compressed
            for name in names:
                zf.write(stage / name, arcname=name)
            zf.write(stage / MANIFEST, arcname=MANIFEST)
    shutil.rmtree(stage)
    return out_zip
