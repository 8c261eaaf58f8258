"""``segrepro bench models``: FLOPs and latency of the eval forward's main output, per GMAC; peer errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from segrepro.cli import main
from segrepro.models import build
from segrepro.models.bench import CPU_SIZE, bench_models, count_flops, format_table


def _full_forward_flops(method: str, size: tuple[int, int]) -> float:
    with torch.device("meta"):
        model = build(method, variant="tiny").eval()
        x = torch.empty(1, 3, *size)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return float(counter.get_total_flops())


def test_flops_count_the_main_output_only() -> None:
    size = (64, 128)
    assert count_flops("ann", "tiny", size) < _full_forward_flops("ann", size)  # dsn not run
    assert count_flops("gald", "tiny", size) == _full_forward_flops("gald", size)  # eval runs no dsn anyway


def test_cpu_row_reports_gmac_and_ms_per_gmac() -> None:
    (row,) = bench_models(["ann"], ["tiny"], repeats=1, threads=1)
    assert row.cpu_gmac == pytest.approx(count_flops("ann", "tiny", CPU_SIZE) / 2e9)
    assert row.cpu_ms is not None and row.cpu_ms > 0
    assert math.isclose(row.cpu_ms_per_gmac, row.cpu_ms / row.cpu_gmac)
    assert "CPU ms/GMAC" in format_table([row])


@pytest.mark.parametrize("argv, message", [
    (["--peer", "detectron"], "unknown peer 'detectron'; choose one of: mmseg"),
    (["--peer", "mmseg"], "--peer mmseg needs --peer-python"),
    (["--peer", "mmseg", "--peer-python", "/nonexistent/python"], "--peer mmseg needs --peer-python"),
])
def test_peer_bad_input_is_one_error_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "models", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_peer_script_is_in_the_checkout() -> None:
    assert (Path(__file__).parents[1] / "scripts" / "bench-mmseg-ann.py").is_file()
