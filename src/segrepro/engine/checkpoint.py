"""Training checkpoints: atomic writes, full state for exact resume, fallback past corrupt files.

A checkpoint holds model, optimizer, scaler, schedule position, iteration, every rank's RNG states and
the sampler position, so a run killed at any moment resumes to bit-identical weights (on CPU). Files are
written to a temp file and renamed, and loaded with ``weights_only=True``; a file that fails to load
(truncated by a crash mid-copy, bad disk) is skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from segrepro.io import atomic_path

log = logging.getLogger(__name__)
_NAME = re.compile(r"^iter_(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))  # legacy: the tuple form
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Writes ``iter_XXXXXXXX.pt`` into ``directory`` and keeps the newest ``keep`` of them."""

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]

    def save(self, iteration: int, state: Mapping[str, Any]) -> Path:
        path = self.directory / f"iter_{iteration:08d}.pt"
        with atomic_path(path) as tmp:
            torch.save(dict(state), tmp)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads; corrupt ones are reported and skipped."""
        for path in reversed(self.paths()):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or "iteration" not in state or "model" not in state:
                    raise ValueError("not a segrepro training checkpoint")
            except Exception as err:  # a truncated zip raises RuntimeError, pickle errors vary
                log.warning(
                    "skipping unreadable checkpoint %s (%s); trying the previous one",
                    path,
                    str(err).split(".")[0][:160],
                )
                continue
            state["path"] = str(path)
            return state
        return None
