"""Where a figure was made: CPU model, the ISA flags that change float results, cores, threads, torch.

Results differ across CPU kinds, so every benchmark table and every MLflow run names its machine, and
they all read it here (torch is imported only by :func:`describe`, so the metrics path stays torch-free).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

ISA_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx2", "fma")


def cpu_info() -> tuple[str, str]:
    """(CPU model name, the :data:`ISA_FLAGS` present, comma-separated) from /proc/cpuinfo."""
    model, flags = "", ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            present = set(value.split())
            flags = ",".join(f for f in ISA_FLAGS if f in present)
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def cores() -> int:
    """The cores this process may run on (its CPU affinity; all of the machine's where that is unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_kind() -> str:
    """``model (ISA flags)``: the CPU kind a figure holds for."""
    model, flags = cpu_info()
    return f"{model} ({flags or 'ISA flags unknown'})"


def describe() -> str:
    """One line for a benchmark record: CPU kind, cores, torch threads, torch (and the GPU)."""
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu_kind()}, {cores()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}{gpu}"
