"""``segrepro bench blocks``: ANN's efficiency study (``efficiency_statics/``), APNB/AFNB against non-local.

The non-local baselines are our own APNB/AFNB with one change: keys and values are taken at every
position instead of at the 110 pyramid anchors (:meth:`NonLocalAttention.anchors`). So the two blocks of
a pair have the same channel sizes (ANN: 2048 in, 256 key/value), the same projections and the same fuse
conv; only the attention's key count differs. ``part="attention"`` (the default) measures the attention
alone (projections, affinity, output conv), as the paper's comparison of the blocks does; ``"full"`` adds
the concat + fuse conv that both blocks share.

* Time: eval-mode forward under ``no_grad``, batch 1, median of ``repeats`` after one warm-up.
* Peak memory: CPU, the rise of the process's peak RSS (``VmHWM``, reset before each row) over its RSS
  after building the block and its input (activations and workspace, not weights); CUDA,
  ``max_memory_allocated`` above the allocation before the forward. All CPU rows run in one spawned
  process so the parent's memory never counts.
* FLOPs: ``FlopCounterMode`` on meta tensors (2 per multiply-add; softmax and pooling not counted).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from segrepro.errors import UserError
from segrepro.machine import describe
from segrepro.models.ann_blocks import AFNB, APNB, AsymmetricAttention
from segrepro.models.bench import _reset_peak_rss, _rss_kb

#: The seed's feature sizes (h, w): 96², 128² and 128×256 (the paper's "256×128").
SIZES: tuple[tuple[int, int], ...] = ((96, 96), (128, 128), (128, 256))
BLOCKS: tuple[str, ...] = ("apnb", "nonlocal", "afnb", "nonlocal_fusion")
#: What each baseline is compared with in the ratio columns.
PAIRS: dict[str, str] = {"nonlocal": "apnb", "nonlocal_fusion": "afnb"}


class NonLocalAttention(AsymmetricAttention):
    """The standard (embedded-Gaussian) non-local attention: keys and values at every position."""

    def anchors(self, x: Tensor) -> Tensor:
        return x.flatten(2)


@dataclass(frozen=True)
class Channels:
    """ANN's: 2048 in (layer4), 1024 low (layer3, AFNB only), 256 key and value channels."""

    channels: int = 2048
    low_channels: int = 1024
    key: int = 256
    value: int = 256


def build_block(name: str, ch: Channels, part: str = "full") -> nn.Module:
    """One of :data:`BLOCKS`, in eval mode; the non-local ones swap in :class:`NonLocalAttention`.
    ``part="attention"``: only the attention (projections, affinity, W), without the concat + fuse conv."""
    if name in ("apnb", "nonlocal"):
        block: APNB | AFNB = APNB(ch.channels, ch.key, ch.value)
        if name == "nonlocal":
            block.stages[0] = NonLocalAttention(
                ch.channels, ch.channels, ch.key, ch.value, ch.channels, share_query_key=True
            )
    elif name in ("afnb", "nonlocal_fusion"):
        block = AFNB(ch.low_channels, ch.channels, ch.key, ch.value)
        if name == "nonlocal_fusion":
            block.stages[0] = NonLocalAttention(ch.low_channels, ch.channels, ch.key, ch.value, ch.channels)
    else:
        raise UserError(f"unknown block {name!r}; choose from {', '.join(BLOCKS)}")
    return (block.stages[0] if part == "attention" else block).eval()


def _inputs(
    name: str, ch: Channels, size: tuple[int, int], device: str | torch.device, part: str = "full"
) -> tuple[Tensor, ...]:
    """The block's arguments: APNB ``(x,)`` (its attention: ``(x, x)``), AFNB ``(low, high)``."""
    high = torch.randn(1, ch.channels, *size, device=device)
    if name in ("apnb", "nonlocal"):
        return (high, high) if part == "attention" else (high,)
    return torch.randn(1, ch.low_channels, *size, device=device), high


@dataclass
class BlockRow:
    block: str
    part: str
    size: str
    device: str
    gflops: float
    ms: float | None = None
    peak_mb: float | None = None


def count_block_flops(name: str, ch: Channels, size: tuple[int, int], part: str = "full") -> float:
    with torch.device("meta"):
        block = build_block(name, ch, part)
        xs = _inputs(name, ch, size, "meta", part)
    counter = FlopCounterMode(display=False)
    with counter:
        block(*xs)
    return float(counter.get_total_flops())


def _time(block: nn.Module, xs: Sequence[Tensor], repeats: int, sync: Any = None) -> float:
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first run warms up
            start = time.perf_counter()
            block(*xs)
            if sync is not None:
                sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:] or times) * 1e3


def _cpu_rows(
    jobs: list[tuple[str, tuple[int, int]]], ch: Channels, repeats: int, threads: int, part: str
) -> list[tuple[float, float]]:
    """(median ms, peak MB) per job; runs in a spawned process."""
    torch.set_num_threads(threads)
    if jobs:  # one untimed pass so first-use allocations (thread pools, kernels) count in no row
        _time(build_block(jobs[0][0], ch, part), _inputs(jobs[0][0], ch, jobs[0][1], "cpu", part), 0)
    out = []
    for name, size in jobs:
        torch.manual_seed(0)
        block, xs = build_block(name, ch, part), _inputs(name, ch, size, "cpu", part)
        _reset_peak_rss()
        before = _rss_kb("VmRSS")
        ms = _time(block, xs, repeats)
        out.append((ms, (_rss_kb("VmHWM") - before) / 1024))
        del block, xs
    return out


def _cuda_row(name: str, ch: Channels, size: tuple[int, int], repeats: int, part: str) -> tuple[float, float]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    block, xs = build_block(name, ch, part).cuda(), _inputs(name, ch, size, "cuda", part)
    with torch.no_grad():
        block(*xs)  # warm-up (cuBLAS handles, kernels) before the memory baseline
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = _time(block, xs, repeats, torch.cuda.synchronize)
    return ms, (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_blocks(
    blocks: Sequence[str] = BLOCKS,
    sizes: Sequence[tuple[int, int]] = SIZES,
    device: str = "cpu",
    ch: Channels = Channels(),
    repeats: int = 3,
    threads: int | None = None,
    part: str = "attention",
) -> list[BlockRow]:
    """One row per (block, size) on ``device``: GFLOPs, median ms, peak MB."""
    if part not in ("attention", "full"):
        raise UserError(f"--part {part!r}: choose attention or full", exit_code=2)
    for name in blocks:
        if name not in BLOCKS:
            raise UserError(f"unknown block {name!r}; choose from {', '.join(BLOCKS)}")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; run on a GPU machine or use --device cpu")
    jobs = [(name, size) for size in sizes for name in blocks]
    if device == "cpu":
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            measured = pool.submit(_cpu_rows, jobs, ch, repeats, threads or torch.get_num_threads(), part).result()
    else:
        measured = [_cuda_row(name, ch, size, repeats, part) for name, size in jobs]
    return [
        BlockRow(name, part, f"{size[0]}x{size[1]}", device, count_block_flops(name, ch, size, part) / 1e9, ms, mb)
        for (name, size), (ms, mb) in zip(jobs, measured, strict=True)
    ]


def ratios(rows: Sequence[BlockRow]) -> list[dict[str, Any]]:
    """Non-local ÷ ours per size (the paper's "× faster", "× less memory", and FLOPs)."""
    by_key = {(r.block, r.part, r.size, r.device): r for r in rows}
    out = []
    for r in rows:
        ours = by_key.get((PAIRS.get(r.block, ""), r.part, r.size, r.device))
        if ours is None:
            continue

        def div(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        out.append(
            {
                "baseline": r.block,
                "block": ours.block,
                "part": r.part,
                "size": r.size,
                "device": r.device,
                "time_x": div(r.ms, ours.ms),
                "memory_x": div(r.peak_mb, ours.peak_mb),
                "flops_x": div(r.gflops, ours.gflops),
            }
        )
    return out


def report(rows: Sequence[BlockRow], ch: Channels) -> dict[str, Any]:
    """The JSON record: machine, threads and load beside the rows and ratios."""
    return {
        "machine": describe(),
        "threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
        "channels": asdict(ch),
        "rows": [asdict(r) for r in rows],
        "ratios": ratios(rows),
    }


def to_json(rows: Sequence[BlockRow], ch: Channels) -> str:
    return json.dumps(report(rows, ch), indent=2) + "\n"


def markdown(rows: Sequence[BlockRow]) -> str:
    """Rows then ratios as Markdown tables (for docs/benchmarks.md)."""

    def fmt(v: float | None, spec: str = ".1f") -> str:
        return "" if v is None else format(v, spec)

    lines = ["| block | part | feature size | device | GFLOPs | ms | peak MB |", "|---|---|---|---|---:|---:|---:|"]
    lines += [
        f"| {r.block} | {r.part} | {r.size} | {r.device} | {fmt(r.gflops, '.4g')} | {fmt(r.ms)} | {fmt(r.peak_mb)} |"
        for r in rows
    ]
    lines += [
        "",
        "| non-local ÷ ours | part | feature size | device | time × | memory × | FLOPs × |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {q['baseline']} ÷ {q['block']} | {q['part']} | {q['size']} | {q['device']} | {fmt(q['time_x'])} | "
        f"{fmt(q['memory_x'])} | {fmt(q['flops_x'])} |"
        for q in ratios(rows)
    ]
    return "\n".join(lines)
