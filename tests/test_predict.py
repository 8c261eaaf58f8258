"""``segrepro predict`` on one's own images: outputs at the input's size, palettes, SSL query maps, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segrepro.cli import main
from segrepro.data import cityscapes_labels
from segrepro.evaluation.predict_images import SSL_QUERY_COLOURS
from segrepro.models import build
from segrepro.stages import resolved_config

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _run_folder(tmp: Path, method: str, num_classes: int | None) -> Path:
    """A demo-sized run folder as training leaves it: config.yaml (the demo recipe) and model.pt."""
    _, cfg = resolved_config(method, "demo", (), PARAMS)
    run = tmp / "runs" / method
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.record()))
    torch.manual_seed(0)
    kwargs = {"num_classes": num_classes} if num_classes else {}
    torch.save(build(method, variant=cfg.variant, **kwargs).state_dict(), run / "model.pt")
    return run


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """A 333×517 JPEG, a 1000×750 greyscale PNG, an RGBA PNG in a subfolder and a file that is no image."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (517, 333, 3), dtype=np.uint8)).save(folder / "street.jpg")
    Image.fromarray(rng.integers(0, 255, (750, 1000), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 4), dtype=np.uint8)).save(folder / "sub" / "rgba.png")
    return folder


def test_predict_writes_outputs_at_each_input_size(tmp_path: Path, images: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_folder(tmp_path, "alignseg", 19)
    out = tmp_path / "out"
    code = _run(["predict", "--method", "alignseg", "--checkpoint", str(run / "model.pt"), str(images / "street.jpg"),
                 str(images / "wide.png"), "--out", str(out), "--device", "cpu",
                 "--format", "overlay,labelIds,trainIds,color"])
    assert code == 0, capsys.readouterr().err
    for stem, size in (("street", (333, 517)), ("wide", (1000, 750))):
        for fmt in ("overlay", "labelIds", "trainIds", "color"):
            with Image.open(out / f"{stem}_{fmt}.png") as im:
                assert im.size == size, (stem, fmt)
        train_ids = np.asarray(Image.open(out / f"{stem}_trainIds.png"))
        label_ids = np.asarray(Image.open(out / f"{stem}_labelIds.png"))
        assert train_ids.max() < 19
        assert np.array_equal(label_ids, cityscapes_labels.train_to_label_lut()[train_ids])
        colour = np.asarray(Image.open(out / f"{stem}_color.png").convert("RGB"))
        assert np.array_equal(colour, cityscapes_labels.colors()[train_ids])  # the official palette


def test_predict_self_supervised_query_maps_and_bad_inputs(tmp_path: Path, images: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_folder(tmp_path, "alignseg_ssl", None)
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = _run(["predict", "--method", "alignseg_ssl", "--checkpoint", str(run / "model.pt"), str(images),
                 str(tmp_path / "missing.jpg"), "--out", str(out), "--device", "cpu", "--format", "trainIds,color"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: " + str(images / "broken.png") + ": cannot read image" in err
    assert "missing.jpg: no such file or folder" in err and "2 input(s) failed" in err
    with Image.open(out / "sub" / "rgba_trainIds.png") as im:  # folder inputs keep their subfolders
        assert im.size == (50, 40)
    queries = np.asarray(Image.open(out / "street_trainIds.png"))
    assert queries.shape == (517, 333) and queries.max() < 5
    colour = np.asarray(Image.open(out / "street_color.png").convert("RGB"))
    assert np.array_equal(colour, SSL_QUERY_COLOURS[queries])
    assert not (out / "broken_trainIds.png").exists()


def test_predict_refuses_bad_options(tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_folder(tmp_path, "alignseg_ssl", None)
    base = ["predict", "--method", "alignseg_ssl", "--checkpoint", str(run / "model.pt"), str(images),
            "--out", str(tmp_path / "out")]
    assert _run(base + ["--format", "labelIds"]) == 2
    assert "labelIds exist for Cityscapes only" in capsys.readouterr().err
    assert _run(base + ["--alpha", "1.5"]) == 2
    assert _run(["predict", "--method", "ann", "--checkpoint", str(run / "model.pt"), str(images)]) == 2
    assert "the run trained alignseg_ssl, not ann" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
