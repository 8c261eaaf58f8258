"""`segrepro recipes --json` holds every published number with its dataset and split (issue table), each
official recipe has a CPU twin whose paper column is its official twin's, and unsupported rows say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segrepro.cli import main
from segrepro.tracking.recipe_table import JSON_KEYS

ROOT = Path(__file__).resolve().parents[1]

# (method, recipe) → (paper mIoU, dataset, paper split): the table, one entry per published number.
PUBLISHED = {
    ("ann", "official"): (79.9, "cityscapes", "val"),
    ("ann", "official_test"): (81.3, "cityscapes", "test"),
    ("ann", "official_context"): (52.8, "pascal_context", "val"),
    ("ann", "official_ade20k"): (45.24, "ade20k", "val"),
    ("gald", "official_r50"): (80.8, "cityscapes", "test"),
    ("gald", "official_test"): (81.8, "cityscapes", "test"),
    ("gald", "official_coarse"): (82.9, "cityscapes", "test"),
    ("dgcnet", "official_r50"): (79.6, "cityscapes", "val"),
    ("dgcnet", "official"): (80.3, "cityscapes", "val"),
    ("dgcnet", "official_test"): (82.0, "cityscapes", "test"),
    ("alignseg", "official_ce"): (80.3, "cityscapes", "val"),
    ("alignseg", "official"): (81.4, "cityscapes", "val"),
    ("acfnet", "official_test"): (81.85, "cityscapes", "test"),
    ("alignseg_ssl", "official"): (69.5, "voc", "val"),
    ("alignseg_ssl", "official_coco27"): (35.1, "coco_stuff27", "val"),
    ("gald", "official_mapillary"): (83.3, "cityscapes", "test"),
}
RANGES = {("dgcnet", "official_r50"): [79.6, 79.8], ("dgcnet", "official"): [80.3, 80.4]}


def _rows(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    with pytest.raises(SystemExit) as done:
        main(["recipes", "--params", str(ROOT / "params.yaml"), *extra])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_json_holds_every_published_number(capsys: pytest.CaptureFixture[str]) -> None:
    table = {(r["method"], r["recipe"]): r for r in json.loads(_rows(capsys, "--json"))}
    for key, (miou, dataset, split) in PUBLISHED.items():
        row = table[key]
        assert set(JSON_KEYS) <= row.keys(), key
        assert (row["paper_mIoU"], row["dataset"], row["paper_split"]) == (miou, dataset, split), key
        assert row["source"], key
        assert row.get("paper_range") in (None, RANGES.get(key)), key
    assert "Mapillary" in table[("gald", "official_mapillary")]["unsupported"]
    # the numbers the old leaderboard set against val recipes now sit only on the test ones
    assert table[("gald", "official")]["paper_mIoU"] is None and table[("acfnet", "official")]["paper_mIoU"] is None
    assert table[("ann", "mmseg")]["paper_mIoU"] is None  # a number is not inherited through extends


def test_every_official_recipe_has_a_cpu_twin_with_its_paper_number(capsys: pytest.CaptureFixture[str]) -> None:
    table = {(r["method"], r["recipe"]): r for r in json.loads(_rows(capsys, "--json")) if not r.get("unsupported")}
    for (method, recipe), row in table.items():
        if not recipe.startswith("official"):
            continue
        twin = table[(method, row["cpu_twin"])]
        assert twin["twin_of"] == recipe and twin["variant"] == "tiny", (method, recipe)
        assert (twin["dataset"], twin["split"], twin["train_split"]) == (row["dataset"], row["split"], row["train_split"])
        assert (twin["paper_mIoU"], twin["paper_split"]) == (row["paper_mIoU"], row["paper_split"])
        if row["init_from"]:  # a chain's twin chains the twins
            assert twin["init_from"].split("/")[1] == table[tuple(row["init_from"].split("/"))]["cpu_twin"]


def test_text_listing_names_twin_and_unsupported_reason(capsys: pytest.CaptureFixture[str]) -> None:
    out = _rows(capsys)
    assert "ann/official_ade20k  ade20k val" in out and "paper 45.24" in out and "twin: demo_ade20k" in out
    assert "gald/official_mapillary" in out and "UNSUPPORTED: needs Mapillary" in out
