"""Atomic file writes: nothing is ever half-written (temp file in the same folder, then rename)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; rename it onto ``dst`` only if the block succeeds."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dst)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(dst: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dst: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dst, text.encode("utf-8"))
