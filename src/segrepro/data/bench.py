"""``segrepro bench data``: training-loader throughput (decode + per-method augmentation) on this machine.

Why: the data path must keep up with the GPUs; this measures images/s of the real reader, transforms
and DataLoader on a synthetic Cityscapes written to a temp folder, so it needs no dataset.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from segrepro.data import get_dataset, synth_dataset
from segrepro.data.loader import build_loader
from segrepro.data.transforms import Transform
from segrepro.errors import UserError
from segrepro.machine import cores, cpu_kind


@dataclass(frozen=True)
class DataBenchResult:
    images_per_s: float
    images: int
    size: tuple[int, int]
    workers: int
    method: str
    cpu: str
    cores: int
    torch: str

    def line(self) -> str:
        h, w = self.size
        return (
            f"{self.images_per_s:.2f} images/s decoded + augmented ({self.method} train transforms, {h}x{w} "
            f"PNG, {self.workers} workers, {self.images} timed images) on {self.cpu}, {self.cores} cores, "
            f"torch {self.torch}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def bench_data(
    transform: Transform,
    method: str,
    size: tuple[int, int] = (1024, 2048),
    workers: int = 2,
    images: int = 16,
    seed: int = 0,
) -> DataBenchResult:
    """Write ``images`` synthetic Cityscapes train images, run one untimed warm-up pass (worker start-up,
    page cache) and time a second full pass of the training loader (batch 1) through ``transform``
    (``method``'s training transforms, built by the caller from its method card)."""
    if images < 2 or workers < 0:
        raise UserError("--images must be at least 2 and --workers at least 0")
    with tempfile.TemporaryDirectory(prefix="segrepro-bench-data-") as tmp:
        root = synth_dataset("cityscapes", Path(tmp) / "cityscapes", {"train": images}, size, seed)
        dataset = get_dataset("cityscapes", root, "train", transform=transform)
        loader = build_loader(dataset, batch_size=1, train=True, workers=workers, seed=seed)
        for _ in tqdm(loader, desc="warm-up", unit="img"):
            pass
        start = time.perf_counter()
        count = sum(batch["image"].shape[0] for batch in tqdm(loader, desc="timed", unit="img"))
        elapsed = time.perf_counter() - start
        del loader
    return DataBenchResult(count / elapsed, count, size, workers, method, cpu_kind(), cores(), torch.__version__)
