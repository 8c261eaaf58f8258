"""``manifest.json`` for prepared datasets: sha256 and size of every written file.

Why: the prepared folder is a DVC output; the manifest lets anyone (or a later stage) check that the
files on disk are exactly those the prepare step wrote, without DVC.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segrepro.io import atomic_write_text

MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """sha256, size and mtime (ns) of one file; the mtime lets a rerun skip files that did not change."""
    st = path.stat()
    return {"sha256": sha256 or sha256_file(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def build_manifest(
    folder: Path,
    dataset: str,
    counts: Mapping[str, int],
    extra: Mapping[str, Any] | None = None,
    known_sha256: Mapping[str, str] | None = None,
) -> dict:
    """Manifest of every file under ``folder`` (except the manifest itself), keys in sorted order.

    ``known_sha256`` (relative path → digest) holds digests the caller already has (computed from the bytes
    it wrote, or reused from the previous manifest), so those files are not read again.
    """
    known = known_sha256 or {}
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            rel = p.relative_to(folder).as_posix()
            files[rel] = file_entry(p, known.get(rel))
    return {"dataset": dataset, "counts": dict(counts), **dict(extra or {}), "files": files}


def write_manifest(
    folder: Path,
    dataset: str,
    counts: Mapping[str, int],
    extra: Mapping[str, Any] | None = None,
    known_sha256: Mapping[str, str] | None = None,
) -> dict:
    """Build and write ``folder/manifest.json``; returns the manifest."""
    manifest = build_manifest(folder, dataset, counts, extra, known_sha256)
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def verify_manifest(folder: Path) -> list[str]:
    """Problem lines for files that are missing, changed or not listed (empty list = intact)."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    listed = manifest["files"]
    actual = build_manifest(folder, manifest["dataset"], manifest["counts"])["files"]
    problems = [f"{folder / k}: missing; re-run segrepro data prepare" for k in sorted(listed.keys() - actual.keys())]
    problems += [
        f"{folder / k}: not in the manifest; remove it or re-run prepare" for k in sorted(actual.keys() - listed.keys())
    ]
    problems += [
        f"{folder / k}: content differs from the manifest; re-run segrepro data prepare"
        for k in sorted(listed.keys() & actual.keys())
        if (listed[k]["sha256"], listed[k]["size"]) != (actual[k]["sha256"], actual[k]["size"])
    ]
    return problems
