"""Cityscapes test-server archive: one 8-bit labelId PNG per test image, zipped flat, nothing else.

Format (reference cityscapes_eval_and_submission.md §3): pixel values are **labelIds** (not trainIds),
the PNG has the image's full size and mode ``L``, and is named after its image
(``berlin_000000_000019_leftImg8bit.png``) so exactly one file matches ``<city>_<seq>_<frame>*.png``.
The archive holds only those PNGs: how the server treats other files is undocumented, and a rejected
upload costs a wait of about 48 h. The provenance (method, checkpoint sha256, protocol, git SHA) is the
prediction folder's ``manifest.json``; packaging writes it beside the archive as ``X.zip.manifest.json``,
with the archive's sha256 and every member's.

Two steps that can run apart (predict on a GPU node, package elsewhere): predictions go to a folder, each
PNG written atomically, so a rerun skips the images already there; packaging zips that folder into a temp
file, renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segrepro.data.manifest import sha256_file
from segrepro.errors import UserError
from segrepro.io import atomic_path, atomic_write_text

MANIFEST = "manifest.json"
PREDICTION_SUFFIX = "_leftImg8bit.png"


def staging_dir(out_zip: Path) -> Path:
    return out_zip.with_name(out_zip.name + ".parts")


def prediction_name(stem: str) -> str:
    """The archive name of the prediction for image ``stem`` (the input image's own name)."""
    return f"{stem}{PREDICTION_SUFFIX}"


def open_prediction_dir(folder: Path, manifest: dict[str, Any]) -> Path:
    """Create or reuse a prediction folder; refuse one left by a different model, protocol or split."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    previous = folder / MANIFEST
    if previous.is_file():
        old = json.loads(previous.read_text())
        keys = ("method", "checkpoint_sha256", "protocol", "split")
        if any(old.get(k) != manifest.get(k) for k in keys):
            raise UserError(
                f"{folder}: holds predictions of another run ({', '.join(f'{k}={old.get(k)}' for k in keys)}); "
                "delete that folder or choose another output"
            )
    atomic_write_text(previous, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


def open_staging(out_zip: Path, manifest: dict[str, Any]) -> Path:
    """The prediction folder ``submit build`` uses beside its archive (``X.zip.parts/``)."""
    return open_prediction_dir(staging_dir(out_zip), manifest)


def manifest_path(out_zip: Path) -> Path:
    """``X.zip`` → ``X.zip.manifest.json``, the archive's provenance kept outside it."""
    return out_zip.with_name(out_zip.name + ".manifest.json")


def write_archive(pred_dir: Path, names: Iterable[str], out_zip: Path) -> dict[str, Any]:
    """Zip the PNGs ``names`` of ``pred_dir`` (only those) and write ``X.zip.manifest.json`` beside it.

    Streams one file at a time (each read once: hashed and stored). Returns the archive's and the manifest's
    sha256 and the prediction count.
    """
    names = sorted(names)
    missing = [n for n in names if not (pred_dir / n).is_file()]
    if missing:
        raise UserError(
            f"{pred_dir}: {len(missing)} prediction(s) missing (first: {missing[0]}); rerun the "
            "prediction step to finish them"
        )
    provenance = pred_dir / MANIFEST
    manifest = json.loads(provenance.read_text()) if provenance.is_file() else {}
    members = {}
    with atomic_path(out_zip) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are already compressed
            for name in names:
                data = (pred_dir / name).read_bytes()
                members[name] = hashlib.sha256(data).hexdigest()
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # same bytes, same archive
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
    archive_sha = sha256_file(out_zip)
    manifest.update(
        {"archive": out_zip.name, "archive_sha256": archive_sha, "predictions": len(names), "members_sha256": members}
    )
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write_text(manifest_path(out_zip), text)
    return {
        "archive": str(out_zip),
        "archive_sha256": archive_sha,
        "manifest": str(manifest_path(out_zip)),
        "manifest_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "predictions": len(names),
    }
