"""Cityscapes reader, synthetic stand-in and prepare on real files (small sizes, 2 images per split)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from segrepro.cli import main
from segrepro.data import get_dataset, prepare_dataset, synth_dataset
from segrepro.data.cityscapes_labels import label_to_train, label_to_train_lut
from segrepro.data.manifest import verify_manifest
from segrepro.errors import UserError

SIZE = (64, 128)


def cs_train_id(label_id: int) -> int:
    """cityscapesscripts' own answer, with its 'not evaluated' trainIds (255, -1) folded to 255."""
    train_id = cs_labels.id2label[label_id].trainId
    return train_id if 0 <= train_id < 255 else 255


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cs") / "cityscapes"
    synth_dataset("cityscapes", root, "2,2,2", SIZE, seed=0)
    return root, prepare_dataset("cityscapes", root)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_trainid_mapping_matches_cityscapesscripts() -> None:
    lut = label_to_train_lut()
    for label_id in range(34):
        assert lut[label_id] == cs_train_id(label_id), label_id
        assert label_to_train(label_id) == cs_train_id(label_id), label_id
    assert label_to_train(-1) == cs_train_id(-1) == 255
    assert sorted(set(lut[:34].tolist()) - {255}) == list(range(19))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_reader_samples(synthetic: tuple[Path, Path], split: str) -> None:
    root, prepared = synthetic
    ds = get_dataset("cityscapes", root, split, with_instances=True)
    assert len(ds) == 2
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (*SIZE, 3) and s["image"].dtype == np.uint8
        assert s["name"].startswith(s["city"] + "_")
        if split == "test":
            assert "label" not in s and "instance" not in s
            continue
        assert s["label"].shape == SIZE and s["label"].dtype == np.uint8
        assert set(np.unique(s["label"]).tolist()) <= set(range(19)) | {255}
        assert s["instance"].dtype == np.int32 and s["instance"].shape == SIZE
        from_prepared = get_dataset("cityscapes", root, split, prepared=prepared)[i]["label"]
        np.testing.assert_array_equal(from_prepared, s["label"])


def test_trainval_split_is_train_then_val(synthetic: tuple[Path, Path]) -> None:
    """The test-server recipes' train + val split: both parts' images and labels, raw or prepared."""
    root, prepared = synthetic
    parts = [get_dataset("cityscapes", root, s, prepared=prepared) for s in ("train", "val")]
    both = get_dataset("cityscapes", root, "trainval", prepared=prepared)
    assert both.images == parts[0].images + parts[1].images
    np.testing.assert_array_equal(both[len(parts[0])]["label"], parts[1][0]["label"])
    assert both.label_path(len(parts[0])).parts[-3] == "val"
    assert (prepared / "lists" / "trainval.txt").read_text().count("\n") == len(both)


def test_coarse_train_extra_and_trainval_coarse(tmp_path: Path) -> None:
    """A 4th split count writes the coarse set in the official layout; trainval_coarse reads fine train, coarse
    train_extra (raw labelIds, also with a prepared folder) and fine val, in that order."""
    root = synth_dataset("cityscapes", tmp_path / "cs", "1,1,1,2", SIZE, seed=0)
    prepared = prepare_dataset("cityscapes", root)
    coarse = sorted((root / "gtCoarse" / "train_extra").glob("*/*_gtCoarse_labelIds.png"))
    assert [p.parent.name for p in coarse] == ["augsburg", "bad-honnef"]
    for label_png in coarse:
        stem = label_png.name.removesuffix("_gtCoarse_labelIds.png")
        assert (root / "leftImg8bit" / "train_extra" / label_png.parent.name / f"{stem}_leftImg8bit.png").is_file()
        for suffix in ("instanceIds.png", "color.png", "polygons.json"):
            assert (label_png.parent / f"{stem}_gtCoarse_{suffix}").is_file()
    extra = get_dataset("cityscapes", root, "train_extra", with_instances=True)
    sample = extra[0]
    assert sample["label"].shape == SIZE and sample["instance"].shape == SIZE
    raw = np.asarray(Image.open(coarse[0]))
    np.testing.assert_array_equal(sample["label"], label_to_train_lut()[raw])
    assert (raw == 0).mean() > 0.1  # a coarse annotation leaves the class boundaries unlabeled
    both = get_dataset("cityscapes", root, "trainval_coarse", prepared=prepared)
    assert [p.parent.parent.name for p in both.images] == ["train", "train_extra", "train_extra", "val"]
    assert "gtCoarse" in both.label_path(1).parts and both.label_path(0).is_relative_to(prepared)
    np.testing.assert_array_equal(both[1]["label"], sample["label"])
    with pytest.raises(UserError, match="leftImg8bit_trainextra.zip"):
        get_dataset("cityscapes", synth_dataset("cityscapes", tmp_path / "fine", "1,1,1", SIZE, 0), "trainval_coarse")
    with pytest.raises(UserError, match="then optionally train_extra"):
        synth_dataset("cityscapes", tmp_path / "bad", "1,1,1,1,1", SIZE, 0)


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_evaluated_class_in_each_split(synthetic: tuple[Path, Path], split: str) -> None:
    ds = get_dataset("cityscapes", synthetic[0], split)
    seen = set().union(*(np.unique(ds[i]["label"]).tolist() for i in range(len(ds))))
    assert set(range(19)) <= seen
    assert 255 in seen  # some void pixels


def test_official_layout_and_encodings(synthetic: tuple[Path, Path]) -> None:
    root, _ = synthetic
    images = sorted((root / "leftImg8bit").glob("*/*/*_leftImg8bit.png"))
    assert [p.parent.parent.name for p in images].count("train") == 2
    assert {p.parent.name for p in images if p.parent.parent.name == "val"} <= {"frankfurt", "lindau", "munster"}
    for img in images:
        split, city = img.parent.parent.name, img.parent.name
        stem = img.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / city / stem
        assert Image.open(img).mode == "RGB"
        label = np.asarray(Image.open(f"{gt}_gtFine_labelIds.png"))
        inst_im = Image.open(f"{gt}_gtFine_instanceIds.png")
        assert inst_im.mode == "I;16" and Image.open(f"{gt}_gtFine_labelIds.png").mode == "L"
        inst = np.asarray(inst_im).astype(np.int64)
        np.testing.assert_array_equal(np.where(inst >= 1000, inst // 1000, inst), label)
        has_instances = {lab.id for lab in cs_labels.labels if lab.hasInstances}
        assert set((np.unique(inst[inst >= 1000]) // 1000).tolist()) <= has_instances
        poly = json.loads(Path(f"{gt}_gtFine_polygons.json").read_text())
        assert (poly["imgHeight"], poly["imgWidth"]) == SIZE and poly["objects"]
        if split == "test":  # withheld: ego vehicle / border / unlabeled only
            assert set(np.unique(label).tolist()) <= {0, 1, 2}
        else:
            assert (inst >= 1000).any()


def test_prepared_trainids_equal_cityscapesscripts_mapping(synthetic: tuple[Path, Path]) -> None:
    root, prepared = synthetic
    outputs = sorted(prepared.glob("gtFine/*/*/*_gtFine_labelTrainIds.png"))
    assert len(outputs) == 6
    mapping = np.array([cs_train_id(i) for i in range(34)], dtype=np.uint8)
    for out in outputs:
        raw = out.relative_to(prepared).as_posix().replace("_labelTrainIds.png", "_labelIds.png")
        label_ids = np.asarray(Image.open(root / raw))
        np.testing.assert_array_equal(np.asarray(Image.open(out)), mapping[label_ids])
    assert verify_manifest(prepared) == []
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["dataset"] == "cityscapes" and manifest["counts"] == {"train": 2, "val": 2, "test": 2}
    train = (prepared / "lists" / "train.txt").read_text().splitlines()
    assert len(train) == 2 and all((root / p).is_file() for line in train for p in line.split("\t"))
    assert len((prepared / "lists" / "trainval.txt").read_text().splitlines()) == 4


def test_synth_is_deterministic(tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        synth_dataset("cityscapes", tmp_path / name, "1,1,1", (32, 64), seed=seed)
    a, b, c = (files_of(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_cli_synth_help_and_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["data", "synth", "--help"], capsys)
    assert code == 0 and "--split-sizes" in out
    code, _, err = run_cli(["data", "synth", "nope", "--out", str(tmp_path / "x")], capsys)
    assert code == 1 and err.strip().count("\n") == 0 and err.startswith("error: unknown dataset 'nope'")
    code, _, err = run_cli(["data", "synth", "cityscapes", "--out", str(tmp_path / "x"), "--size", "64by128"], capsys)
    assert code == 1 and "--size" in err and not (tmp_path / "x").exists()


def test_prepare_refuses_foreign_output_and_replaces_own(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = synthetic
    out = tmp_path / "prepared"
    assert prepare_dataset("cityscapes", root, out) == out.resolve()
    assert prepare_dataset("cityscapes", root, out) == out.resolve()  # a re-run replaces its own output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds other files"):
        prepare_dataset("cityscapes", root, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_reader_user_errors(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = synthetic
    with pytest.raises(UserError, match="run segrepro data prepare"):
        get_dataset("cityscapes", root, "train", prepared=tmp_path)
    with pytest.raises(UserError, match="no \\*_leftImg8bit.png images"):
        get_dataset("cityscapes", tmp_path, "val")
    with pytest.raises(UserError, match="unknown Cityscapes split"):
        get_dataset("cityscapes", root, "training")
