"""VOC, COCO-Stuff-27, PASCAL Context and ADE20K: readers on their synthetic sets, label maps, prepare."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segrepro.cli import main
from segrepro.data import DATASETS, get_dataset, prepare_dataset, synth_dataset
from segrepro.data import ade20k, coco_stuff, pascal_context, voc
from segrepro.errors import DatasetError

SIZE = (48, 64)
SPLITS = {"voc": ("trainaug", "val", "train"), "coco_stuff27": ("train", "val"),
          "pascal_context": ("train", "val"), "ade20k": ("train", "val")}
COUNTS = {"voc": {"trainaug": 3, "val": 2, "train": 1}, "coco_stuff27": {"train": 3, "val": 2},
          "pascal_context": {"train": 3, "val": 2}, "ade20k": {"train": 3, "val": 2}}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synth")
    return {name: synth_dataset(name, base / name, "3,2", SIZE, seed=0) for name in SPLITS}


def _copy(roots: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(roots[name], tmp_path / name))


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# -- readers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPLITS))
def test_reader_counts_shapes_dtypes_and_labels(roots: dict[str, Path], name: str) -> None:
    spec = DATASETS[name]
    legal = set(range(spec.num_classes)) | {255}
    for split in SPLITS[name]:
        ds = get_dataset(name, roots[name], split)
        assert len(ds) == COUNTS[name][split]
        assert ds.num_classes == spec.num_classes and len(ds.class_names) == spec.num_classes
        seen: set[int] = set()
        for sample in ds:
            assert sample["image"].shape == (*SIZE, 3) and sample["image"].dtype == np.uint8
            assert sample["label"].shape == SIZE and sample["label"].dtype == np.uint8
            assert isinstance(sample["name"], str)
            seen |= set(np.unique(sample["label"]).tolist())
        assert seen <= legal
        if split != "train" or name != "voc":  # voc 'train' is the 1-image VOC-origin part of trainaug
            assert seen - {255} == set(range(spec.num_classes)), f"{name}/{split} misses classes"


def test_synth_is_deterministic(roots: dict[str, Path], tmp_path: Path) -> None:
    again = synth_dataset("voc", tmp_path / "voc", "3,2", SIZE, seed=0)
    assert _tree_digest(again) == _tree_digest(roots["voc"])
    other = synth_dataset("voc", tmp_path / "voc1", "3,2", SIZE, seed=1)
    assert _tree_digest(other) != _tree_digest(roots["voc"])


def test_voc_layouts_agree_and_encodings(roots: dict[str, Path]) -> None:
    root = roots["voc"]
    assert voc.find_layouts(root) == ["voc2012", "pvoc"]
    for split in SPLITS["voc"]:
        a, b = voc.VOCDataset(root, split, layout="voc2012"), voc.VOCDataset(root, split, layout="pvoc")
        assert [p.name for p in a.pairs] == [p.name for p in b.pairs]
        assert all(np.array_equal(x["label"], y["label"]) for x, y in zip(a, b))
    base = root / "VOCdevkit" / "VOC2012"
    val_id = voc.VOCDataset(root, "val").pairs[0].name
    assert Image.open(base / "SegmentationClass" / f"{val_id}.png").mode == "P"
    assert Image.open(base / "JPEGImages" / f"{val_id}.jpg").format == "JPEG"
    train = set(voc.read_ids(base / "ImageSets/Segmentation/train.txt"))
    trainaug = voc.read_ids(base / "ImageSets/Segmentation/trainaug.txt")
    assert train < set(trainaug) and not set(trainaug) & set(voc.read_ids(base / "ImageSets/Segmentation/val.txt"))
    for i in trainaug:  # SBD-origin masks have no 255 band, VOC-origin ones do
        label = np.asarray(Image.open(base / "SegmentationClassAug" / f"{i}.png"))
        assert Image.open(base / "SegmentationClassAug" / f"{i}.png").mode == "L"
        assert (255 in label) == (i in train)


def test_coco_mapping_facts_both_orders() -> None:
    al, st = coco_stuff.coarse_lut("alignseg"), coco_stuff.coarse_lut("stego")
    # (PNG value, supercategory, AlignSeg index, STEGO index) from datasets.md §3.2
    facts = [(0, "person", 15, 9), (2, "vehicle", 23, 11), (15, "animal", 1, 7), (26, "accessory", 0, 6),
             (63, "furniture", 9, 3), (71, "electronic", 5, 0), (80, "appliance", 2, 1), (53, "food", 7, 2),
             (120, "food-stuff", 8, 14), (97, "furniture-stuff", 10, 15), (148, "ground", 11, 21),
             (156, "sky", 18, 23), (105, "sky", 18, 23), (123, "plant", 16, 22), (101, "ceiling", 4, 12),
             (113, "floor", 6, 13), (174, "wall", 24, 18), (180, "window", 26, 19), (181, "solid", 19, 24),
             (147, "water", 25, 26), (112, "structural", 21, 25), (131, "raw-material", 17, 16), (91, "textile", 22, 17),
             (94, "building", 3, 20), (9, "outdoor", 14, 8), (42, "sports", 20, 10), (83, "indoor", 12, 4),
             (43, "kitchen", 13, 5)]
    for value, name, a, s in facts:
        assert (al[value], st[value]) == (a, s), value
        assert coco_stuff.ORDERS["alignseg"][a] == name and coco_stuff.ORDERS["stego"][s] == name
    for value in (*coco_stuff.UNUSED_VALUES, 182, 255):
        assert al[value] == 255 and st[value] == 255
    members = [v for m in coco_stuff.MEMBERS.values() for v in m]
    assert len(members) == len(set(members)) == 171 and len(coco_stuff.MEMBERS) == 27
    perm = coco_stuff.reorder("alignseg", "stego")
    assert np.array_equal(perm[al[:182][al[:182] != 255]], st[:182][st[:182] != 255])


def test_coco_curated_selection_and_order(roots: dict[str, Path]) -> None:
    root = roots["coco_stuff27"]
    assert len(coco_stuff.CocoStuff27Dataset(root, "train", curated=False)) == 4  # + one non-curated image
    a = coco_stuff.CocoStuff27Dataset(root, "val", order="alignseg")[0]["label"]
    s = coco_stuff.CocoStuff27Dataset(root, "val", order="stego")[0]["label"]
    perm = coco_stuff.reorder("alignseg", "stego")
    assert np.array_equal(np.where(a == 255, 255, perm[np.minimum(a, 26)]), s)


def test_ade_and_context_label_shift(roots: dict[str, Path]) -> None:
    assert (ade20k.LUT[0], ade20k.LUT[1], ade20k.LUT[150], ade20k.LUT[151]) == (255, 0, 149, 255)
    ds = ade20k.ADE20KDataset(roots["ade20k"], "val")
    for pair, sample in zip(ds.pairs, ds):
        raw = np.asarray(Image.open(pair.label))
        assert np.array_equal(sample["label"], np.where(raw == 0, 255, raw.astype(np.int64) - 1))
    c59 = pascal_context.PascalContextDataset(roots["pascal_context"], "train")[0]["label"]
    c60 = pascal_context.PascalContextDataset(roots["pascal_context"], "train", num_classes=60)[0]["label"]
    assert np.array_equal(c59, np.where(c60 == 0, 255, c60.astype(np.int64) - 1))


# -- prepare -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPLITS))
def test_prepare_writes_lists_and_manifest(roots: dict[str, Path], tmp_path: Path, name: str) -> None:
    out = prepare_dataset(name, roots[name], tmp_path / "prepared")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == name
    for split, n in COUNTS[name].items():
        assert len((out / f"{split}.txt").read_text().split()) == n == manifest["counts"][split]
    listed = manifest["files"]["train.txt" if name != "voc" else "trainaug.txt"]
    assert listed["size"] == (out / ("train.txt" if name != "voc" else "trainaug.txt")).stat().st_size
    assert manifest["sources"] and all(len(v["sha256"]) == 64 for v in manifest["sources"].values())


def _break_voc_missing_mask(root: Path) -> Path:
    i = voc.read_ids(root / "PVOC/sets/trainaug.txt")[-1]
    (root / "PVOC/SegmentationClassAug" / f"{i}.png").unlink()
    return root / "PVOC/SegmentationClassAug" / f"{i}.png"


def _break_voc_rgb_mask(root: Path) -> Path:
    i = voc.read_ids(root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt")[0]
    path = root / "VOCdevkit/VOC2012/SegmentationClass" / f"{i}.png"
    Image.open(path).convert("RGB").save(path)
    return path


def _break_voc_overlap(root: Path) -> Path:
    lists = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    (lists / "trainaug.txt").write_text((lists / "trainaug.txt").read_text() + (lists / "val.txt").read_text())
    return lists / "trainaug.txt"


def _break_coco_value(root: Path) -> Path:
    path = sorted((root / "annotations/train2017").glob("*.png"))[0]
    label = np.asarray(Image.open(path)).copy()
    label[0, 0] = 11  # an unused COCO thing id
    Image.fromarray(label).save(path)
    return path


def _break_coco_truncated_jpeg(root: Path) -> Path:
    path = sorted((root / "images/val2017").glob("*.jpg"))[0]
    path.write_bytes(path.read_bytes()[:300])
    return path


def _break_context_size(root: Path) -> Path:
    path = sorted((root / "VOCdevkit/VOC2010/SegmentationClassContext").glob("*.png"))[0]
    Image.fromarray(np.asarray(Image.open(path))[:-4]).save(path)
    return path


def _break_context_list(root: Path) -> Path:
    path = root / "VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt"
    path.write_text(path.read_text() + "2009_999999\n")
    return root / "VOCdevkit/VOC2010/JPEGImages/2009_999999.jpg"


def _break_ade_extra_label(root: Path) -> Path:
    ann = root / "ADEChallengeData2016/annotations/validation"
    extra = ann / "ADE_val_00000099.png"
    shutil.copy(sorted(ann.glob("*.png"))[0], extra)
    return extra


def _break_ade_folder_name(root: Path) -> Path:
    images = root / "ADEChallengeData2016/images"
    (images / "training").rename(images / "Training")
    return images / "Training"


BROKEN = [
    ("voc", _break_voc_missing_mask), ("voc", _break_voc_rgb_mask), ("voc", _break_voc_overlap),
    ("coco_stuff27", _break_coco_value), ("coco_stuff27", _break_coco_truncated_jpeg),
    ("pascal_context", _break_context_size), ("pascal_context", _break_context_list),
    ("ade20k", _break_ade_extra_label), ("ade20k", _break_ade_folder_name),
]


@pytest.mark.parametrize("name,breaker", BROKEN, ids=[b.__name__[7:] for _, b in BROKEN])
def test_prepare_rejects_broken_dataset(roots: dict[str, Path], tmp_path: Path, name: str, breaker) -> None:
    root = _copy(roots, name, tmp_path)
    broken = breaker(root)
    out = tmp_path / "prepared"
    with pytest.raises(DatasetError) as err:
        prepare_dataset(name, root, out)
    assert any(line.startswith(str(broken)) for line in err.value.problems), err.value.problems
    assert not out.exists()


def test_prepare_cli_exit_code_and_one_line_per_problem(roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(roots, "ade20k", tmp_path)
    broken = _break_ade_extra_label(root)
    with pytest.raises(SystemExit) as exc:
        main(["data", "prepare", "ade20k", "--root", str(root)])
    assert exc.value.code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "|" not in line]
    assert err_lines == [f"error: {broken}: label has no image; add {broken.parents[2] / 'images/validation/ADE_val_00000099.jpg'} or remove the label"]
    assert not (tmp_path / "ade20k_prepared").exists()
