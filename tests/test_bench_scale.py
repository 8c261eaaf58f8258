"""`segrepro bench scale` and the side-by-side metrics bench run end to end on a tiny stand-in (64x128).

The same code paths as the full-size measurement; only the fraction and image size differ. Nothing is timed
against a threshold here (figures go to docs/benchmarks.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segrepro.cli import main
from segrepro.data.cityscapes_full import synth_full
from segrepro.evaluation.bench import bench_eval_folder, replicate_val_pairs


def test_bench_scale_stages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scale.json"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "scale", "--fraction", "0.002", "--size", "64x128", "--work-dir", str(tmp_path / "w"),
              "--stages", "synth,prepare,dvc,s3,metrics,submit,loader", "--metrics-images", "6",
              "--loader-images", "2", "--json", str(out)])
    assert (exc.value.code or 0) == 0
    rows = {r["stage"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["prepare (second run, unchanged)"]["seconds"] > 0
    assert rows["dvc repro (no-op)"]["seconds"] > 0 and "skipped" in rows["dvc push / pull (S3)"]
    metrics = next(r for k, r in rows.items() if k.startswith("metrics cityscapes"))
    assert metrics["max_abs_difference"] < 1e-9
    assert rows["submit validate (test split)"]["peak_rss_mib"] > 0
    assert rows["loader alignseg: projection"]["workers_per_gpu_at_1_s_per_iter_batch_1"] >= 1
    assert "| submit package (test split) |" in capsys.readouterr().out
    assert not (tmp_path / "w").exists()  # the work folder is removed


def test_side_by_side_metrics_identical(tmp_path: Path) -> None:
    root = synth_full(tmp_path / "cs", 0.002, (64, 128), workers=1, progress=False)["root"]
    gt_root, pred_root = replicate_val_pairs(Path(root), tmp_path / "pairs", 7)
    assert len(list((gt_root / "gtFine" / "val").glob("*/*_labelIds.png"))) == 7
    figures = bench_eval_folder(gt_root, pred_root, tmp_path, workers=2)
    assert figures["images"] == 7 and figures["max_abs_difference"] < 1e-9
