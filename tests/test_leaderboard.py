"""Leaderboard on hand-made run folders: rows, paper column, per-class heat map, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from segrepro.errors import UserError
from segrepro.tracking.leaderboard import build_leaderboard, write_outputs


def make_run(runs: Path, method: str, recipe: str, variant: str, miou: float, classes: dict[str, float]) -> None:
    folder = runs / method
    (folder / "eval").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"recipe": recipe, "variant": variant, "dataset": "cityscapes"}))
    (folder / "train_summary.json").write_text(json.dumps(
        {"method": method, "recipe": recipe, "iterations": 7200, "seconds_per_iter": 0.5, "mlflow_run_id": "abc"}))
    (folder / "eval" / "eval_summary.json").write_text(json.dumps(
        {"method": method, "split": "val", "protocol": "sliding ss", "mIoU": miou, "iIoU": miou / 2,
         "category_IoU": 0.9}))
    rows = "class,IoU,iIoU\n" + "".join(f"{k},{v},nan\n" for k, v in classes.items())
    (folder / "eval" / "per_class.csv").write_text(rows)


def test_rows_paper_column_and_files(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "ann", "official", "r101", 0.8, {"road": 0.9, "sky": 0.7})
    make_run(runs, "alignseg", "demo", "tiny", 0.3, {"road": 0.5, "sky": float("nan")})
    (runs / "empty").mkdir()  # a folder without results is not a row
    table = build_leaderboard(runs, None, {"abc": {"git_sha": "deadbeef", "dvc_data_hash": "md5x", "link": "runs:/abc"}})

    assert list(table["method"]) == ["ann", "alignseg"]  # sorted by reproduced mIoU
    ann, demo = table.iloc[0], table.iloc[1]
    assert ann["paper_mIoU"] == 79.9 and "MendelXu/ANN" in ann["paper_source"]
    assert ann["mIoU"] == pytest.approx(80.0) and ann["delta"] == pytest.approx(0.1)
    assert ann["iIoU"] == pytest.approx(40.0) and ann["category_IoU"] == pytest.approx(90.0)
    assert ann["train_hours"] == pytest.approx(1.0) and ann["train_s_per_iter"] == 0.5
    assert ann["git_sha"] == "deadbeef" and ann["data_hash"] == "md5x" and ann["mlflow_run"] == "runs:/abc"
    assert demo["paper_mIoU"] == "n/a (synthetic)" and math.isnan(demo["delta"])
    assert demo["IoU/road"] == pytest.approx(50.0) and math.isnan(demo["IoU/sky"])
    assert demo["params_M"] > 0  # counted from the built model when no bench figure exists

    files = write_outputs(table, tmp_path / "lb")
    md = files["md"].read_text()
    assert "| ann" in md and "n/a (synthetic)" in md
    csv = pd.read_csv(files["csv"])
    assert len(csv) == 2 and "IoU/road" in csv.columns
    page = files["html"].read_text()
    assert page.count("<tr><th>") == 2 and "hsl(" in page and "<script" not in page and "http" not in page
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["ann/official"]["mIoU"] == pytest.approx(80.0) and "delta" not in metrics["alignseg/demo"]


def test_no_results_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "runs" / "x").mkdir(parents=True)
    with pytest.raises(UserError, match="no run folder"):
        build_leaderboard(tmp_path / "runs", None)
    with pytest.raises(UserError, match="runs folder not found"):
        build_leaderboard(tmp_path / "missing", ["ann"])
