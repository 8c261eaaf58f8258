"""``segrepro bench models``: size, FLOPs, CPU latency/memory and CUDA throughput per method/variant.

Every forward is the eval forward evaluation runs: eval mode, the main output only (``main_logits``, aux
heads not run), so FLOPs, latency and their ratio are what ``segrepro evaluate`` pays.

* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on **meta** tensors (no memory, no compute, so an
  R101 at 1024×2048 costs about a second). It counts conv, matmul, bmm and attention as 2 FLOPs per
  multiply-add; norms, activations, pooling, resizing and grid_sample are not counted. GMACs = FLOPs / 2
  is what most papers call "FLOPs". ``ms/GMAC`` divides a latency by the GMACs at its own input size: the
  cost per unit of work, comparable across architectures of different size (``--peer mmseg`` compares ANN's
  with MMSegmentation's, :func:`bench_peer`).
* CPU latency and peak memory: eval-mode forward under ``no_grad``, batch 1, each model in a fresh
  spawned process so allocator reuse between models cannot hide memory. Peak memory is the rise of
  the process's peak RSS (``VmHWM``) over its RSS after building the model, i.e. activations and
  workspace, not the weights.
* CUDA (when present): fp32 and bf16-autocast images/s with ``channels_last``, TF32 off for fp32.

Self-supervised AlignSeg only accepts square inputs; it is measured at its eval size 448×448.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from segrepro.errors import UserError
from segrepro.machine import describe
from segrepro.models.outputs import main_logits
from segrepro.models.registry import build, list_methods, list_variants

FLOP_SIZE = (1024, 2048)
CPU_SIZE = (512, 1024)
CUDA_SIZE = (1024, 2048)
SQUARE_ONLY = {"alignseg_ssl": (448, 448)}
# ``--peer``: the side-by-side script of each peer code base (in the checkout's scripts/, run in its own venv).
PEERS = {"mmseg": "bench-mmseg-ann.py"}


@dataclass
class ModelBench:
    """One row of the table; ``None`` where a measurement was not requested or not possible."""

    method: str
    variant: str
    params_m: float
    gflops: float | None = None
    flop_input: str = ""
    cpu_ms: float | None = None
    cpu_gmac: float | None = None
    cpu_ms_per_gmac: float | None = None
    cpu_peak_mb: float | None = None
    cpu_input: str = ""
    cuda_fp32_img_s: float | None = None
    cuda_bf16_img_s: float | None = None
    cuda_bf16_ms_per_gmac: float | None = None
    cuda_peak_gb: float | None = None
    cuda_input: str = ""


def _size(method: str, size: tuple[int, int]) -> tuple[int, int]:
    return SQUARE_ONLY.get(method, size)


def count_params(model: nn.Module) -> int:
    """Unique parameters (shared tensors once), trainable or not."""
    return sum(p.numel() for p in model.parameters())


def count_flops(method: str, variant: str, size: tuple[int, int]) -> float:
    """FLOPs of one eval forward (main output) at ``size`` on meta tensors (grad mode on: torch's module
    tracker needs it)."""
    with torch.device("meta"):
        model = build(method, variant=variant).eval()
        x = torch.empty(1, 3, *size)
    counter = FlopCounterMode(display=False)
    with counter:
        main_logits(model, x)
    return float(counter.get_total_flops())


def _rss_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise OSError(f"{field_name} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS so the build's transient peak does not count (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the peak then also covers the build; still an upper bound


def cpu_latency(method: str, variant: str, size: tuple[int, int], repeats: int, threads: int) -> tuple[float, float]:
    """(median ms, peak MB above the post-build RSS) of an eval forward; run in a fresh process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(method, variant=variant).eval()
    x = torch.randn(1, 3, *size)
    _reset_peak_rss()
    before = _rss_kb("VmRSS")
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first run also warms up
            start = time.perf_counter()
            main_logits(model, x)
            times.append(time.perf_counter() - start)
    peak = _rss_kb("VmHWM") - before
    return statistics.median(times[1:] if repeats else times) * 1e3, peak / 1024


def cuda_throughput(method: str, variant: str, size: tuple[int, int], repeats: int) -> tuple[float, float, float]:
    """(fp32 img/s, bf16 img/s, peak GB) at batch 1 with channels_last."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    model = build(method, variant=variant).eval().cuda()
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
    x = torch.randn(1, 3, *size, device="cuda").to(memory_format=torch.channels_last)
    torch.cuda.reset_peak_memory_stats()
    rates = []
    for dtype in (None, torch.bfloat16):
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            for _ in range(3):
                main_logits(model, x)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                main_logits(model, x)
            torch.cuda.synchronize()
        rates.append(repeats / (time.perf_counter() - start))
    return rates[0], rates[1], torch.cuda.max_memory_allocated() / 1e9


def select(methods: list[str] | None, variants: list[str] | None) -> list[tuple[str, str]]:
    """(method, variant) pairs to measure; unknown names are a UserError listing the choices."""
    chosen = methods or list_methods()
    pairs: list[tuple[str, str]] = []
    known: set[str] = set()
    for m in chosen:
        names = list_variants(m)  # UserError for an unknown method
        known.update(names)
        pairs += [(m, v) for v in (variants or names) if v in names]
    unknown = set(variants or ()) - {v for _, v in pairs}
    if unknown:
        raise UserError(
            f"unknown variant(s) {', '.join(sorted(unknown))} for {', '.join(chosen)}; "
            f"choose among: {', '.join(sorted(known))}"
        )
    return pairs


def bench_models(
    methods: list[str] | None = None,
    variants: list[str] | None = None,
    device: str = "cpu",
    flops: bool = True,
    latency: bool = True,
    repeats: int = 3,
    threads: int | None = None,
) -> list[ModelBench]:
    """Measure every selected (method, variant); see the module docstring for what each figure means."""
    if device not in ("cpu", "cuda"):
        raise UserError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    threads = threads or torch.get_num_threads()
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for method, variant in tqdm(select(methods, variants), desc="bench models", unit="model"):
        with torch.device("meta"):
            row = ModelBench(method, variant, count_params(build(method, variant=variant)) / 1e6)
        if flops:
            size = _size(method, FLOP_SIZE)
            row.gflops, row.flop_input = count_flops(method, variant, size) / 1e9, "x".join(map(str, size))
        if latency and device == "cpu":
            size = _size(method, CPU_SIZE)
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                row.cpu_ms, row.cpu_peak_mb = pool.submit(cpu_latency, method, variant, size, repeats, threads).result()
            row.cpu_input = "x".join(map(str, size))
            row.cpu_gmac = count_flops(method, variant, size) / 2e9
            row.cpu_ms_per_gmac = row.cpu_ms / row.cpu_gmac
        if device == "cuda":
            size = _size(method, CUDA_SIZE)
            fp32, bf16, peak = cuda_throughput(method, variant, size, max(repeats, 10))
            row.cuda_fp32_img_s, row.cuda_bf16_img_s, row.cuda_peak_gb = fp32, bf16, peak
            row.cuda_input = "x".join(map(str, size))
            row.cuda_bf16_ms_per_gmac = 1e3 / bf16 / (count_flops(method, variant, size) / 2e9)
        rows.append(row)
    return rows


COLUMNS = (
    ("method", "method"),
    ("variant", "variant"),
    ("params_m", "params (M)"),
    ("gflops", "GFLOPs"),
    ("flop_input", "FLOP input"),
    ("cpu_ms", "CPU ms"),
    ("cpu_gmac", "CPU GMAC"),
    ("cpu_ms_per_gmac", "CPU ms/GMAC"),
    ("cpu_peak_mb", "CPU peak MB"),
    ("cpu_input", "CPU input"),
    ("cuda_fp32_img_s", "fp32 img/s"),
    ("cuda_bf16_img_s", "bf16 img/s"),
    ("cuda_bf16_ms_per_gmac", "bf16 ms/GMAC"),
    ("cuda_peak_gb", "CUDA peak GB"),
    ("cuda_input", "CUDA input"),
)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3g}"
    return str(value)


def format_table(rows: list[ModelBench], markdown: bool = False) -> str:
    """A plain or Markdown table of the columns that hold at least one value."""
    cols = [(k, t) for k, t in COLUMNS if any(getattr(r, k) not in (None, "") for r in rows)]
    cells = [[t for _, t in cols]] + [[_cell(getattr(r, k)) for k, _ in cols] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in cols) + "|")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells)


def to_json(rows: list[ModelBench]) -> str:
    return json.dumps({"machine": describe(), "rows": [asdict(r) for r in rows]}, indent=2)


def bench_peer(peer: str, python: Path | None, repeats: int, threads: int) -> dict:
    """The JSON report of ``peer``'s side-by-side script, run by ``python`` (the peer's venv: MMSegmentation
    cannot share segrepro's) with this checkout's ``src`` importable, so both models run in one process."""
    if peer not in PEERS:
        raise UserError(f"unknown peer {peer!r}; choose one of: {', '.join(PEERS)}", exit_code=2)
    if python is None or not os.access(python, os.X_OK):
        raise UserError(
            f"--peer {peer} needs --peer-python, the python of a venv with the peer installed "
            f"(scripts/{PEERS[peer]} says how to make one); got {python}",
            exit_code=2,
        )
    src = Path(__file__).resolve().parents[2]
    script = src.parent / "scripts" / PEERS[peer]
    if not script.is_file():
        raise UserError(f"--peer {peer} runs {script}, which only a source checkout has")
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    cmd = [str(python), str(script), "--repeats", str(repeats), "--threads", str(threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"{script.name} under {python} failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout)


def format_peer(report: dict, markdown: bool = False) -> str:
    """The side-by-side rows (median and fastest seconds, GMAC, ms/GMAC) and segrepro's ratios to the peer."""
    rows = [
        (r["label"], r["s"], r["s_min"], r["gmac"], r["s_per_gmac"] * 1e3, r["s_per_gmac_min"] * 1e3)
        for r in report["rows"].values()
    ]
    cells = [["model", "eval forward s", "fastest s", "GMAC", "ms/GMAC", "fastest ms/GMAC"]]
    cells += [[label] + [_cell(v) for v in vals] for label, *vals in rows]
    cells.append(
        ["segrepro / peer"]
        + [
            f"{report[k]:.3f}" if k else ""
            for k in ("ratio_s", "ratio_s_min", "", "ratio_s_per_gmac", "ratio_s_per_gmac_min")
        ]
    )
    head = (
        f"{report['machine']} ({report['cpu_capability']}), torch {report['torch']}, {report['threads']} threads, "
        f"input {report['input']}, median of {report['repeats']}, load {report['load_average_1min']:.1f}, "
        f"{report['date']}"
    )
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in cells[0]) + "|")
    else:
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([head, *lines])
