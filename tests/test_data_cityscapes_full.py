"""The full-profile Cityscapes stand-in and prepare at scale, on a tiny fraction (64x128 images)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from segrepro.data import cityscapes as cs
from segrepro.data import get_dataset, prepare_dataset
from segrepro.data.cityscapes_full import SETTINGS_NAME, city_counts, expected_images, synth_full
from segrepro.data.manifest import verify_manifest
from segrepro.errors import UserError

FRACTION, SIZE = 0.002, (64, 128)


def files_of(root: Path) -> dict[str, bytes]:
    """Every file's bytes; a prepared manifest by its digests only (it also records mtimes)."""
    out = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    if "manifest.json" in out:
        files = json.loads(out.pop("manifest.json"))["files"]
        out["manifest digests"] = json.dumps({k: v["sha256"] for k, v in files.items()}).encode()
    return out


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("full") / "cityscapes"
    res = synth_full(root, FRACTION, SIZE, seed=0, workers=2, progress=False)
    assert res["images"] == expected_images(FRACTION) == 27 and res["skipped"] == 0
    return root


def test_official_cities_and_layout(standin: Path) -> None:
    for split, cities in cs.OFFICIAL_CITIES.items():
        have = {p.name: len(list(p.glob("*_leftImg8bit.png"))) for p in (standin / "leftImg8bit" / split).iterdir()}
        assert have == city_counts(FRACTION)[split] and set(have) == set(cities)
        for city in have:
            gt = sorted(p.name for p in (standin / "gtFine" / split / city).iterdir())
            assert len(gt) == 4 * have[city] and {n.split("_gtFine_")[1] for n in gt} == {
                "labelIds.png", "instanceIds.png", "color.png", "polygons.json"}
    poly = json.loads(next((standin / "gtFine" / "train").glob("*/*_polygons.json")).read_text())
    assert (poly["imgHeight"], poly["imgWidth"]) == SIZE and poly["objects"]
    assert city_counts(1.0) == cs.OFFICIAL_CITIES  # full size: the real split sizes 2975 / 500 / 1525


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_evaluated_class_in_each_split(standin: Path, split: str) -> None:
    ds = get_dataset("cityscapes", standin, split)
    seen = set().union(*(np.unique(ds[i]["label"]).tolist() for i in range(len(ds))))
    assert set(range(19)) <= seen


def test_same_bytes_with_any_worker_count_and_resume(standin: Path, tmp_path: Path) -> None:
    other = tmp_path / "cityscapes"
    synth_full(other, FRACTION, SIZE, seed=0, workers=1, progress=False)
    assert files_of(other) == files_of(standin)
    victim = next((other / "gtFine" / "val").glob("*/*_instanceIds.png"))
    victim.unlink()
    stale = victim.with_name(f".{victim.name}.abc.tmp")
    stale.write_bytes(b"half")  # what a killed run leaves
    res = synth_full(other, FRACTION, SIZE, seed=0, workers=2, progress=False)
    assert res["skipped"] == res["images"] - 1 and not stale.exists()
    assert files_of(other) == files_of(standin)
    with pytest.raises(UserError, match="same settings"):
        synth_full(other, FRACTION, SIZE, seed=1, progress=False)
    assert json.loads((other / SETTINGS_NAME).read_text())["seed"] == 0


def test_prepare_rerun_skips_unchanged(standin: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "prepared"
    prepare_dataset("cityscapes", standin, out)
    first = files_of(out)
    assert verify_manifest(out) == []
    with caplog.at_level(logging.INFO, logger="segrepro"):
        prepare_dataset("cityscapes", standin, out)
    assert "27 of 27 images unchanged" in caplog.text
    assert files_of(out) == first
    label = next((standin / "gtFine" / "val").glob("*/*_labelIds.png"))
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: checked and converted again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segrepro"):
        prepare_dataset("cityscapes", standin, out)
    assert "26 of 27 images unchanged" in caplog.text and files_of(out) == first
    assert verify_manifest(out) == []
