"""``segrepro data prepare cityscapes`` on broken datasets: exit 2, one line naming the file, nothing written."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segrepro.cli import main
from segrepro.data import synth_dataset

TRAIN = "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
LABEL = "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
INSTANCE = "gtFine/train/aachen/aachen_000000_000019_gtFine_instanceIds.png"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "cityscapes"
    synth_dataset("cityscapes", root, "2,2,2", (32, 64), seed=3)
    return root


def _write(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def missing_label(r: Path) -> str:
    (r / LABEL).unlink()
    return "aachen_000000_000019_leftImg8bit.png: image has no label"


def extra_label(r: Path) -> str:
    shutil.copy(r / LABEL, r / LABEL.replace("000000_000019", "000007_000019"))
    return "aachen_000007_000019_gtFine_labelIds.png: label has no image"


def size_mismatch(r: Path) -> str:
    _write(r / LABEL, np.full((16, 64), 7, np.uint8))
    return "aachen_000000_000019_gtFine_labelIds.png: size 64x16 differs"


def illegal_label_value(r: Path) -> str:
    label = np.asarray(Image.open(r / LABEL)).copy()
    label[0, 0] = 40
    _write(r / LABEL, label)
    return "aachen_000000_000019_gtFine_labelIds.png: illegal labelIds value(s) 40"


def truncated_png(r: Path) -> str:
    data = (r / TRAIN).read_bytes()
    (r / TRAIN).write_bytes(data[: len(data) // 2])
    return "aachen_000000_000019_leftImg8bit.png: unreadable or truncated PNG"


def rgb_label(r: Path) -> str:
    label = np.asarray(Image.open(r / LABEL))
    _write(r / LABEL, np.stack([label] * 3, axis=-1))
    return "aachen_000000_000019_gtFine_labelIds.png: labelIds has mode RGB"


def empty_split(r: Path) -> str:
    for top in ("leftImg8bit", "gtFine"):
        for city in (r / top / "val").iterdir():
            shutil.rmtree(city)
    return "leftImg8bit/val: split 'val' is empty"


def wrong_split_folder(r: Path) -> str:
    (r / "gtFine" / "train").rename(r / "gtFine" / "training")
    return "gtFine/training: unexpected split folder 'training'"


def wrong_top_folder(r: Path) -> str:
    (r / "leftImg8bit").rename(r / "leftimg8bit")
    return "leftImg8bit: folder missing; rename leftimg8bit to leftImg8bit"


def city_mismatch(r: Path) -> str:
    (r / "leftImg8bit/train/bochum").mkdir(exist_ok=True)
    shutil.move(r / TRAIN, r / "leftImg8bit/train/bochum" / Path(TRAIN).name)
    return "bochum/aachen_000000_000019_leftImg8bit.png: city prefix 'aachen' does not match folder 'bochum'"


def bad_file_name(r: Path) -> str:
    (r / TRAIN).rename(r / TRAIN.replace("_leftImg8bit", "_leftImg8Bit"))
    return "aachen_000000_000019_leftImg8Bit.png: file name does not follow"


def illegal_instance_value(r: Path) -> str:
    inst = np.asarray(Image.open(r / INSTANCE)).copy()
    inst[0, 0] = 7001  # road (7) has no instances
    _write(r / INSTANCE, inst)
    return "aachen_000000_000019_gtFine_instanceIds.png: illegal instanceIds value(s) 7001"


def instance_label_disagree(r: Path) -> str:
    inst = np.asarray(Image.open(r / INSTANCE)).copy()
    inst[:2, :2] = np.where(inst[:2, :2] == 23, 21, 23)
    _write(r / INSTANCE, inst)
    return "aachen_000000_000019_gtFine_instanceIds.png: 4 pixels disagree"


def eight_bit_instances(r: Path) -> str:
    _write(r / INSTANCE, np.asarray(Image.open(r / LABEL)))
    return "aachen_000000_000019_gtFine_instanceIds.png: instanceIds has mode L"


def missing_instances(r: Path) -> str:
    (r / INSTANCE).unlink()
    return "aachen_000000_000019_leftImg8bit.png: image has no label; add gtFine/train/aachen/aachen_000000_000019_gtFine_instanceIds.png"


BREAKERS: list[Callable[[Path], str]] = [
    missing_label, extra_label, size_mismatch, illegal_label_value, truncated_png, rgb_label, empty_split,
    wrong_split_folder, wrong_top_folder, city_mismatch, bad_file_name, illegal_instance_value,
    instance_label_disagree, eight_bit_instances, missing_instances,
]


def run_prepare(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["data", "prepare", "cityscapes", "--root", str(root), *extra])
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err
    return int(exc.value.code or 0), err[err.index("error: ") :]  # after any progress bar


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__)
def test_broken_dataset_exit_2_nothing_written(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], breaker: Callable[[Path], str]
) -> None:
    root = tmp_path / "cityscapes"
    shutil.copytree(clean, root)
    expected = breaker(root)
    code, err = run_prepare(root, capsys)
    assert code == 2
    lines = err.removeprefix("error: ").strip().splitlines()
    assert any(expected in line for line in lines), err
    assert all(": " in line and "; " in line for line in lines)  # "<path>: <problem>; <fix>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cityscapes"]  # no output, no temp folder


def test_many_problems_are_capped_at_20(clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "cityscapes"
    shutil.copytree(clean, root)
    for k in range(25):
        shutil.copy(root / LABEL, root / LABEL.replace("000000_000019", f"{100 + k:06d}_000019"))
    code, err = run_prepare(root, capsys, "--out", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 21 and lines[-1] == "... and 5 more problem(s)"
    assert not (tmp_path / "out").exists()


def test_real_sized_split_gets_official_counts_and_cities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2,976 train files (empty: structure is checked before any decoding) mark the set as real."""
    root = tmp_path / "cityscapes"
    for split, city, n in (("train", "aachen", 2976), ("val", "frankfurt", 1), ("test", "berlin", 1)):
        (root / "leftImg8bit" / split / city).mkdir(parents=True)
        (root / "gtFine" / split / city).mkdir(parents=True)
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            (root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png").touch()
            for kind in ("labelIds", "instanceIds"):
                (root / "gtFine" / split / city / f"{stem}_gtFine_{kind}.png").touch()
    code, err = run_prepare(root, capsys)
    assert code == 2
    assert "split 'train' has 2976 images, the official dataset has 2975" in err
    assert "split 'val' has 1 images, the official dataset has 500" in err
    assert "aachen: 2976 images, the official set has 174" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cityscapes"]
