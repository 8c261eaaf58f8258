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
from segrepro.tracking.paper_results import load_paper_index

PAPERS = load_paper_index(Path(__file__).resolve().parents[1] / "params.yaml")


def make_run(runs: Path, method: str, recipe: str, variant: str, miou: float, classes: dict[str, float],
             dataset: str = "cityscapes", split: str = "val", protocol: str = "official: sliding ss",
             folder_name: str | None = None) -> None:
    folder = runs / (folder_name or method)
    (folder / "eval").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"recipe": recipe, "variant": variant, "dataset": dataset}))
    (folder / "train_summary.json").write_text(json.dumps(
        {"method": method, "recipe": recipe, "iterations": 7200, "seconds_per_iter": 0.5, "mlflow_run_id": "abc"}))
    (folder / "eval" / "eval_summary.json").write_text(json.dumps(
        {"method": method, "split": split, "protocol": protocol, "mIoU": miou, "iIoU": miou / 2,
         "category_IoU": 0.9}))
    rows = "class,IoU,iIoU\n" + "".join(f"{k},{v},nan\n" for k, v in classes.items())
    (folder / "eval" / "per_class.csv").write_text(rows)


def test_rows_paper_column_and_files(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "ann", "official", "r101", 0.8, {"road": 0.9, "sky": 0.7})
    make_run(runs, "alignseg", "demo", "tiny", 0.3, {"road": 0.5, "sky": float("nan")})
    (runs / "empty").mkdir()  # a folder without results is not a row
    table = build_leaderboard(runs, None, {"abc": {"git_sha": "deadbeef", "dvc_data_hash": "md5x", "link": "runs:/abc"}},
                              PAPERS)

    assert list(table["method"]) == ["ann", "alignseg"]  # sorted by reproduced mIoU
    ann, demo = table.iloc[0], table.iloc[1]
    assert ann["paper_mIoU"] == 79.9 and "MendelXu/ANN" in ann["paper_source"]
    assert ann["mIoU"] == pytest.approx(80.0) and ann["delta"] == pytest.approx(0.1)
    assert ann["iIoU"] == pytest.approx(40.0) and ann["category_IoU"] == pytest.approx(90.0)
    assert ann["train_hours"] == pytest.approx(1.0) and ann["train_s_per_iter"] == 0.5
    assert ann["git_sha"] == "deadbeef" and ann["data_hash"] == "md5x" and ann["mlflow_run"] == "runs:/abc"
    assert demo["paper_mIoU"] == 81.4 and math.isnan(demo["delta"])  # its official twin's number, no Δ
    assert demo["delta_note"].startswith("no Δ: synthetic stand-in")
    assert demo["IoU/road"] == pytest.approx(50.0) and math.isnan(demo["IoU/sky"])
    assert demo["params_M"] > 0  # counted from the built model when no bench figure exists

    files = write_outputs(table, tmp_path / "lb")
    md = files["md"].read_text()
    assert "| ann" in md and "synthetic stand-in" in md
    csv = pd.read_csv(files["csv"])
    assert len(csv) == 2 and "IoU/road" in csv.columns
    page = files["html"].read_text()
    assert page.count("<tr><th>") == 2 and "hsl(" in page and "<script" not in page and "http" not in page
    assert page.count("data:image/png;base64,") == 1 and '<a href="runs:/abc">MLflow run</a>' in page
    assert "<code title=\"deadbeef\">deadbeef</code>" in page
    header = md.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "method", "recipe", "dataset/split", "protocol", "paper", "ours", "Δ", "note", "cost"]
    assert "cityscapes/val" in md and "train 1.00 h" in md and "git_sha" not in md and "git_sha" in csv.columns
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["ann/official"]["mIoU"] == pytest.approx(80.0) and "delta" not in metrics["alignseg/demo"]


def test_page_groups_by_dataset_and_never_mixes_class_sets(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "ann", "demo", "tiny", 0.7, {"road": 0.9})
    make_run(runs, "alignseg_ssl", "demo", "tiny", 0.4, {"aeroplane": 0.5})
    config = runs / "alignseg_ssl" / "config.yaml"
    config.write_text(config.read_text().replace("cityscapes", "voc"))
    (runs / "ann" / "submission.zip").write_bytes(b"PK")
    page = write_outputs(build_leaderboard(runs, None), tmp_path / "lb")["html"].read_text()
    city, voc = page.index("<h2>cityscapes</h2>"), page.index("<h2>voc</h2>")
    city_part, voc_part = (page[city:voc], page[voc:]) if city < voc else (page[city:], page[voc:city])
    assert "road" in city_part and "aeroplane" not in city_part
    assert "aeroplane" in voc_part and "road" not in voc_part
    assert page.count("data:image/png;base64,") == 2 and ">archive</a>" in city_part


def test_no_results_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "runs" / "x").mkdir(parents=True)
    with pytest.raises(UserError, match="no run folder"):
        build_leaderboard(tmp_path / "runs", None)
    with pytest.raises(UserError, match="runs folder not found"):
        build_leaderboard(tmp_path / "missing", ["ann"])


def test_like_for_like_delta_and_grouping(tmp_path: Path) -> None:
    """A Δ only where split and protocol are the paper's; test-split rows point at their archive and the server;
    rows are grouped by dataset and split."""
    runs = tmp_path / "runs"
    make_run(runs, "ann", "official", "r101", 0.8, {"road": 0.9}, protocol="ss: whole image", folder_name="a-ss")
    make_run(runs, "ann", "official_test", "r101", 0.85, {"road": 0.9}, folder_name="a-test")
    (runs / "a-test" / "submission.zip").write_bytes(b"PK")
    make_run(runs, "ann", "official_ade20k", "r101", 0.46, {"wall": 0.7}, dataset="ade20k", folder_name="a-ade")
    make_run(runs, "dgcnet", "official", "r101", 0.81, {"road": 0.9}, split="test", folder_name="d-test")
    make_run(runs, "ann", "demo_ade20k", "tiny", 0.2, {"wall": 0.3}, dataset="ade20k", folder_name="a-demo")
    table = build_leaderboard(runs, None, None, PAPERS).set_index("recipe", drop=False)

    assert list(table["dataset"]) == ["ade20k", "ade20k", "cityscapes", "cityscapes", "cityscapes"]
    assert table.loc["official_ade20k", "delta"] == pytest.approx(46.0 - 45.24)
    assert table.loc["official_ade20k", "delta_note"] == ""
    demo = table.loc["demo_ade20k"]
    assert demo["paper_mIoU"] == 45.24 and math.isnan(demo["delta"]) and "official_ade20k" in demo["delta_note"]
    test = table.loc["official_test"]
    assert test["paper_mIoU"] == 81.3 and math.isnan(test["delta"])
    assert "evaluation server" in test["delta_note"] and test["archive"].endswith("a-test/submission.zip")
    by_folder = build_leaderboard(runs, ["a-ss", "d-test"], None, PAPERS).set_index("method")
    assert "protocol 'ss'" in by_folder.loc["ann", "delta_note"] and math.isnan(by_folder.loc["ann", "delta"])
    assert "evaluated on test, paper on val" in by_folder.loc["dgcnet", "delta_note"]
