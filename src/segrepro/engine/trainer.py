"""The training loop: one process or many (torchrun), global batch kept, exact resume, AMP on CUDA.

Everything random is a pure function of (seed, iteration, micro-batch): the sample stream
(:class:`~segrepro.engine.sampler.StreamSampler`), each sample's augmentation, and the torch RNG that
dropout draws from, which is re-seeded before every micro-batch. A run therefore gives the same
weights whether it was interrupted or not, and the same loss curve on 1 process with gradient
accumulation as on N processes with the same global batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from segrepro.engine.checkpoint import CheckpointManager, rng_state, set_rng_state
from segrepro.engine.distributed import DistInfo, all_reduce_sum, gather_objects
from segrepro.engine.objectives import Objective
from segrepro.engine.recipe import Recipe, batch_layout
from segrepro.engine.sampler import SeededSamples, StreamSampler
from segrepro.errors import UserError
from segrepro.models.norm import convert_sync_norm

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """What the loop reports to (MLflow in practice); only rank 0 ever gets one."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_checkpoint(self, path: Path, name: str) -> None: ...


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the last good checkpoint is kept."""

    same_on_every_rank = True  # the loss it tests is all-reduced


@dataclass
class TrainResult:
    iterations: int
    final_checkpoint: Path
    losses: list[float] = field(default_factory=list)
    seconds_per_iter: float = float("nan")


def _micro_seed(seed: int, iteration: int, micro_index: int) -> int:
    return (seed * 1_000_003 + iteration * 9_973 + micro_index) % (2**63 - 1)


def _autocast(device: torch.device, amp: str):
    if device.type == "cuda" and amp in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return contextlib.nullcontext()


def _open_history(path: Path, start: int):
    """The per-iteration CSV (iteration, loss, lr), cut back to ``start`` rows after a resume."""
    rows = path.read_text().splitlines() if path.is_file() else []
    kept = [r for r in rows[1:] if r and int(r.split(",")[0]) <= start]
    path.write_text("\n".join(["iteration,loss,lr", *kept]) + "\n")
    return path.open("a")


def _batches(loader: DataLoader):
    while True:
        yield from loader


def train(
    cfg: Recipe,
    model: nn.Module,
    dataset: Dataset,
    make_transform: Callable[[torch.Generator], Callable],
    make_objective: Callable[[nn.Module], Objective],
    out_dir: Path,
    dist: DistInfo,
    iterations: int,
    resume: bool = True,
    tracker: Tracker | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` for ``iterations`` iterations; checkpoints in ``out_dir`` carry ``cfg``.

    ``make_objective(model)`` is called once the model sits on its device (SyncBN converted), so the
    optimiser holds the final parameters.
    """
    iters = iterations
    layout = batch_layout(cfg, dist.world_size)
    global_batch, micro = layout.global_batch, layout.micro_batch
    seed, amp = cfg.seed, cfg.amp
    device = dist.device

    torch.manual_seed(seed + dist.rank)
    model.to(device)
    if device.type == "cuda":
        if dist.distributed:
            model = convert_sync_norm(model)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
    objective = make_objective(model)
    optimizer = objective.optimizer
    for extra in objective.modules:
        extra.to(device)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp == "fp16")
    ckpts = CheckpointManager(out_dir / "checkpoints", keep=cfg.keep_checkpoints)

    start = 0
    state = ckpts.load_latest() if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start = int(state["iteration"])
        ranks = state.get("rng", [])
        if dist.rank < len(ranks):
            set_rng_state(ranks[dist.rank])
        if dist.is_main:
            log.info("resuming from %s at iteration %d", state["path"], start)
    if start >= iters:
        final = ckpts.paths()[-1]
        return TrainResult(start, final)

    net: nn.Module = DDP(model, find_unused_parameters=cfg.find_unused_parameters) if dist.distributed else model
    sampler = StreamSampler(len(dataset), global_batch, micro, dist.rank, dist.world_size, seed, start, iters)  # type: ignore[arg-type]
    workers = cfg.workers
    loader = DataLoader(
        SeededSamples(dataset, make_transform),
        batch_size=micro,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        drop_last=False,
    )
    batches = _batches(loader)
    accum = sampler.accum
    log_every, ckpt_every = cfg.log_every, cfg.checkpoint_every
    result = TrainResult(start, out_dir)
    record = cfg.record()  # every checkpoint carries the recipe it was trained with
    model.train()
    t0, images_done = time.perf_counter(), 0
    history = _open_history(out_dir / "train_log.csv", start) if dist.is_main else None
    # A context manager: an error (divergence, a too-small micro-batch) closes the bar before its message.
    with tqdm(
        total=iters, initial=start, disable=not dist.is_main, dynamic_ncols=True, desc=f"train {cfg.method}"
    ) as bar:
        for it in range(start, iters):
            lr = objective.set_lr(it)
            totals = torch.zeros(1, device=device)
            parts_sum: dict[str, float] = {}
            for a in range(accum):
                batch = next(batches)
                torch.manual_seed(_micro_seed(seed, it, a * dist.world_size + dist.rank))
                sync = (
                    contextlib.nullcontext() if (a == accum - 1 or not dist.distributed) else cast(DDP, net).no_sync()
                )
                with sync:
                    with _autocast(device, amp):
                        loss, parts = objective.loss(net, batch, device)
                    scaler.scale(loss / accum).backward()
                totals += loss.detach()
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v) / accum
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            mean_loss = float(all_reduce_sum(totals)) / (accum * dist.world_size)
            if not math.isfinite(mean_loss):
                last = ckpts.paths()[-1] if ckpts.paths() else None
                raise TrainingDiverged(
                    f"loss became {mean_loss} at iteration {it + 1}; stopped. Last good checkpoint: {last or 'none'}. "
                    "Lower the lr (--set train.<method>.optimizer.lr=...) or check the data"
                )
            result.losses.append(mean_loss)
            images_done += global_batch
            if history is not None:
                history.write(f"{it + 1},{mean_loss:.8g},{lr:.8g}\n")
                history.flush()
            if dist.is_main:
                elapsed = time.perf_counter() - t0
                bar.set_postfix(
                    loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_done / max(elapsed, 1e-9):.1f}"
                )
                bar.update(1)
            if tracker is not None and ((it + 1) % log_every == 0 or it + 1 == iters):
                elapsed = time.perf_counter() - t0
                metrics = {"loss": mean_loss, "lr": lr, "img_per_s": images_done / max(elapsed, 1e-9), **parts_sum}
                if device.type == "cuda":
                    metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                tracker.log_metrics(metrics, step=it + 1)
            if (it + 1) % ckpt_every == 0 or it + 1 == iters:
                rngs = gather_objects(rng_state())
                if dist.is_main:
                    path = ckpts.save(
                        it + 1,
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scaler": scaler.state_dict(),
                            "iteration": it + 1,
                            "schedule": {"lr": lr, "max_iters": iters},
                            "sampler": {"consumed_per_rank": (it + 1) * accum * micro, "seed": seed},
                            "rng": rngs,
                            "config": record,
                        },
                    )
                    result.final_checkpoint = path
    if history is not None:
        history.close()
    result.iterations = iters
    done = max(1, iters - start)
    result.seconds_per_iter = (time.perf_counter() - t0) / done
    if dist.is_main:
        result.final_checkpoint = ckpts.paths()[-1]
    return result
