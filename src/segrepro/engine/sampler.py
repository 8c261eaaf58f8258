"""A deterministic, resumable sample stream that is the same for any number of processes.

Iteration ``t`` consumes samples ``[t·B, (t+1)·B)`` of an endless stream of per-epoch permutations
(seeded by ``seed + epoch``), B being the global batch. That batch is cut into ``world × accum``
micro-batches of ``b`` images; rank ``r`` takes micro-batches ``a·world + r`` for ``a < accum``. So one
process accumulating 2 micro-batches sees exactly the images two processes see, and resuming only needs
the iteration number. Each key also carries a per-sample seed for the augmentation, so augmentation is a
pure function of (seed, epoch, position) whatever the worker layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler


class StreamSampler(Sampler[tuple[int, int]]):
    """Yields ``(dataset_index, sample_seed)`` for one rank, starting at ``start_iteration``."""

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        micro_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_iteration: int = 0,
        max_iterations: int | None = None,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("the training split is empty")
        if global_batch % (micro_batch * world_size):
            raise ValueError(
                f"global batch {global_batch} is not a multiple of micro-batch {micro_batch} × {world_size} processes"
            )
        self.n = num_samples
        self.global_batch = global_batch
        self.micro = micro_batch
        self.rank = rank
        self.world = world_size
        self.accum = global_batch // (micro_batch * world_size)
        self.seed = seed
        self.start = start_iteration
        self.max_iterations = max_iterations

    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def _global(self, position: int, cache: dict[int, list[int]]) -> tuple[int, int]:
        epoch, offset = divmod(position, self.n)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = self._perm(epoch)
        return cache[epoch][offset], (self.seed * 2_654_435_761 + position) % (2**31)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        cache: dict[int, list[int]] = {}
        it = self.start
        while self.max_iterations is None or it < self.max_iterations:
            base = it * self.global_batch
            for a in range(self.accum):
                micro_index = a * self.world + self.rank
                first = base + micro_index * self.micro
                for pos in range(first, first + self.micro):
                    yield self._global(pos, cache)
            it += 1

    def __len__(self) -> int:
        if self.max_iterations is None:
            raise TypeError("an endless stream has no length")
        return (self.max_iterations - self.start) * self.accum * self.micro


class SeededSamples(Dataset):
    """``ds[(index, seed)]``: the sample augmented by a transform built on a generator seeded by ``seed``.

    ``make_transform(generator)`` builds the method's training pipeline (cheap), so each sample's
    augmentation depends only on its key, never on worker scheduling.
    """

    def __init__(self, dataset: Dataset, make_transform: Callable[[torch.Generator], Callable]) -> None:
        self.dataset = dataset
        self.make_transform = make_transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        return self.make_transform(torch.Generator().manual_seed(seed))(self.dataset[index])
