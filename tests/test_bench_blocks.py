"""``segrepro bench blocks``: ANN's efficiency study rows (APNB/AFNB vs non-local) at three feature sizes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from segrepro.cli import main
from segrepro.models.bench_blocks import Channels, build_block


def test_nonlocal_baseline_differs_from_apnb_only_in_its_keys() -> None:
    ch = Channels(16, 8, 8, 8)
    apnb, nonlocal_ = build_block("apnb", ch), build_block("nonlocal", ch)
    assert {k: v.shape for k, v in apnb.state_dict().items()} == {k: v.shape for k, v in nonlocal_.state_dict().items()}
    x = torch.randn(1, 16, 12, 20)
    assert apnb.stages[0].anchors(x).shape[-1] == 110 and nonlocal_.stages[0].anchors(x).shape[-1] == 240


def test_bench_blocks_json_reports_apnb_and_nonlocal_rows(tmp_path: Path) -> None:
    out = tmp_path / "blocks.json"
    try:
        main(["bench", "blocks", "--json", str(out), "--sizes", "16x16,16x24,24x32", "--channels", "16,8,8,8",
              "--repeats", "1", "--blocks", "apnb,nonlocal"])
    except SystemExit as exc:
        assert not exc.code
    record = json.loads(out.read_text())
    assert record["machine"] and record["threads"] >= 1 and "load_avg_1m" in record
    rows = {(r["block"], r["size"]): r for r in record["rows"]}
    assert set(rows) == {(b, s) for b in ("apnb", "nonlocal") for s in ("16x16", "16x24", "24x32")}
    for row in rows.values():
        assert row["ms"] > 0 and row["peak_mb"] is not None and row["gflops"] > 0
    big = [q for q in record["ratios"] if q["size"] == "24x32"][0]
    assert big["baseline"] == "nonlocal" and big["flops_x"] > 1  # 768 keys against 110 anchors
