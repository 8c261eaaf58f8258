"""DataLoader factory: one place that makes loading reproducible (seeded order, seeded workers)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy and ``random`` in each worker from torch's per-worker seed (itself from the loader's
    generator), so numpy-based augmentation is reproducible and differs between workers."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    workers: int = 2,
    pin_memory: bool = False,
    distributed: bool = False,
    seed: int = 0,
    drop_last: bool | None = None,
) -> DataLoader:
    """Shuffled, seeded loader for training (``drop_last`` defaults to True) or an ordered one for eval.

    With ``distributed`` a :class:`DistributedSampler` shards the data (call ``loader.sampler.set_epoch``
    each epoch); otherwise a generator seeded with ``seed`` fixes the shuffle order and worker seeds.
    """
    drop_last = train if drop_last is None else drop_last
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler: DistributedSampler | None = (
        DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last) if distributed else None
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        persistent_workers=workers > 0,
    )
