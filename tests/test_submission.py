"""Submission archives: build/validate round trip on synthetic Cityscapes, resume, metric check, malformed archives."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segrepro import stages
from segrepro.cli import main
from segrepro.data import synth_dataset
from segrepro.evaluation.cityscapes_metrics import evaluate_cityscapes_folders
from segrepro.evaluation.predict import png_bytes
from segrepro.models import build
from segrepro.submission import SubmissionError, check_archive, validate_archive
from segrepro.data.manifest import sha256_file
from segrepro.submission.build import MANIFEST, manifest_path, open_staging, staging_dir

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
H, W = 64, 128


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subm") / "cs"
    synth_dataset("cityscapes", root, "1,2,3", (H, W), 0)
    return root


@pytest.fixture(scope="module")
def checkpoint(city: Path) -> Path:
    torch.manual_seed(0)
    path = city.parent / "model.pt"
    torch.save(build("alignseg", variant="tiny", num_classes=19).state_dict(), path)
    return path


def _build(city: Path, checkpoint: Path, out: Path, split: str = "test") -> dict:
    return stages.submit_build(_trained(checkpoint), city, out, "official", split, track=False)


def _trained(checkpoint: Path) -> stages.TrainedModel:
    return stages.TrainedModel("alignseg", checkpoint, params_path=PARAMS, device="cpu")


def test_build_validate_and_manifest(city: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub.zip"
    summary = _build(city, checkpoint, out)
    assert summary["predictions"] == 3 and summary["resumed"] == 0
    assert not staging_dir(out).exists()
    assert validate_archive(out, city).predictions == 3
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["archive_sha256"] == summary["archive_sha256"] == sha256_file(out)
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        pngs = [n for n in names if n.endswith(".png")]
        assert names == pngs  # only the predictions: the manifest lives beside the archive
        for name in pngs:
            with Image.open(io.BytesIO(zf.read(name))) as im:
                assert (im.mode, im.size) == ("L", (W, H))
                assert set(np.unique(np.asarray(im)).tolist()) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25,
                                                                   26, 27, 28, 31, 32, 33}
    expected = sorted(p.name for p in (city / "leftImg8bit" / "test").glob("*/*_leftImg8bit.png"))
    assert pngs == expected
    assert manifest["method"] == "alignseg" and manifest["split"] == "test"
    assert manifest["checkpoint_sha256"] == sha256_file(checkpoint) and manifest["git_sha"]
    assert main_exit(["submit", "validate", str(out), "--data", str(city)]) == 0


def main_exit(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_resume_skips_written_predictions(city: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub.zip"
    _build(city, checkpoint, out)
    manifest = {k: v for k, v in json.loads(manifest_path(out).read_text()).items()
                if k not in ("archive", "archive_sha256", "predictions", "members_sha256")}
    with zipfile.ZipFile(out) as zf:
        first = sorted(zf.namelist())[0]
    out.unlink()
    stage = open_staging(out, manifest)  # as left by a crash after the first image
    marker = png_bytes(np.full((H, W), 21, dtype=np.uint8))
    (stage / first).write_bytes(marker)
    summary = _build(city, checkpoint, out)
    assert summary["resumed"] == 1
    with zipfile.ZipFile(out) as zf:
        assert zf.read(first) == marker  # kept, not recomputed


def test_staging_of_another_checkpoint_is_refused(city: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub.zip"
    open_staging(out, {"method": "alignseg", "checkpoint_sha256": "0" * 64, "protocol": "x", "split": "test"})
    assert main_exit(["submit", "build", "--method", "alignseg", "--checkpoint", str(checkpoint), "--data", str(city),
                      "--out", str(out), "--params", str(PARAMS), "--device", "cpu", "--workers", "0"]) == 1


def test_val_archive_scores_like_evaluate(city: Path, checkpoint: Path, tmp_path: Path) -> None:
    """The archive's PNGs, scored by the folder evaluator, give the evaluate stage's numbers."""
    out = tmp_path / "val.zip"
    _build(city, checkpoint, out, split="val")
    validate_archive(out, city, "val")
    with zipfile.ZipFile(out) as zf:
        zf.extractall(tmp_path / "preds")
    folder = evaluate_cityscapes_folders(city, tmp_path / "preds", "val", workers=0).official_dict()
    direct = stages.evaluate(_trained(checkpoint), city, "val", out=tmp_path / "eval", overlays=0, track=False)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert folder["averageScoreClasses"] == pytest.approx(direct["mIoU"], abs=1e-12)
    for field in ("classScores", "classInstScores", "categoryScores", "categoryInstScores"):
        for name, value in folder[field].items():
            assert value == pytest.approx(metrics[field][name], abs=1e-12, nan_ok=True)


# --- malformed archives ---------------------------------------------------------------------------


def _test_images(city: Path) -> list[Path]:
    return sorted((city / "leftImg8bit" / "test").glob("*/*_leftImg8bit.png"))


def _good_members(city: Path) -> dict[str, bytes]:
    return {p.name: png_bytes(np.full((H, W), 7, dtype=np.uint8)) for p in _test_images(city)}


def _encode(array: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, **save)
    return buf.getvalue()


def _write(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _mutate(city: Path, case: str) -> dict[str, bytes]:
    members = _good_members(city)
    first = sorted(members)[0]
    if case == "missing":
        del members[first]
    elif case == "duplicate":
        members["extra/" + first] = members[first]
    elif case == "bad_name":
        members["prediction_1.png"] = members.pop(first)
    elif case == "unknown_image":
        members["berlin_999999_000019_leftImg8bit.png"] = members[first]
    elif case == "wrong_size":
        members[first] = png_bytes(np.full((H // 2, W // 2), 7, dtype=np.uint8))
    elif case == "rgb":
        members[first] = _encode(np.full((H, W, 3), 7, dtype=np.uint8), format="PNG")
    elif case == "16bit":
        members[first] = _encode(np.full((H, W), 7, dtype=np.uint16), format="PNG")
    elif case == "train_ids":
        members = {n: png_bytes(np.arange(H * W).reshape(H, W) % 19) for n in members}
    elif case == "jpeg":
        members[first] = _encode(np.full((H, W), 7, dtype=np.uint8), format="JPEG")
    elif case == "traversal":
        members["../" + first] = members.pop(first)
    elif case == "absolute":
        members["/tmp/" + first] = members.pop(first)
    elif case == "nested":
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as zf:
            zf.writestr(first, members[first])
        members["more.zip"] = inner.getvalue()
    elif case == "disguised_nested":
        members["notes.png"] = b"PK\x03\x04" + b"\0" * 40
    elif case == "truncated":
        members[first] = members[first][:40]
    elif case == "manifest_inside":
        members[MANIFEST] = b"{}"
    elif case == "ignore_255":
        members[first] = png_bytes(np.full((H, W), 255, dtype=np.uint8))
    return members


CASES = {
    "missing": "no prediction", "duplicate": "exactly one", "bad_name": "not named", "unknown_image": "no test image",
    "wrong_size": "size 64x32", "rgb": "mode RGB", "16bit": "mode I", "train_ids": "trainIds?",
    "jpeg": "not a PNG", "traversal": "path traversal", "absolute": "absolute path", "nested": "nested archive",
    "disguised_nested": "nested archive", "truncated": "unreadable PNG", "ignore_255": "not evaluated labelIds",
    "manifest_inside": "only the prediction PNGs",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_rejects_malformed(city: Path, tmp_path: Path, case: str) -> None:
    archive = _write(tmp_path / f"{case}.zip", _mutate(city, case))
    problems, _ = check_archive(archive, city)
    assert any(CASES[case] in p for p in problems), problems
    with pytest.raises(SubmissionError):
        validate_archive(archive, city)


def test_validate_rejects_symlink_size_and_non_zip(city: Path, tmp_path: Path) -> None:
    good = _write(tmp_path / "good.zip", _good_members(city))
    assert check_archive(good, city)[0] == []
    link = _write(tmp_path / "link.zip", _good_members(city), symlink="link.png")
    assert any("symbolic link" in p for p in check_archive(link, city)[0])
    assert any("over the 100-byte limit" in p for p in check_archive(good, city, max_bytes=100)[0])
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"hello")
    assert any("not a zip archive" in p for p in check_archive(not_zip, city)[0])
    empty = _write(tmp_path / "empty.zip", {})
    problems = check_archive(empty, city)[0]
    assert sum("no prediction" in p for p in problems) == 3


def test_validate_cli_lists_problems_and_exits_non_zero(city: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    archive = _write(tmp_path / "bad.zip", _mutate(city, "train_ids"))
    assert main_exit(["submit", "validate", str(archive), "--data", str(city)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("trainIds?") == 3


# --- predict and package apart; an independent check of the server format --------------------------


def server_format_problems(archive: Path, data_root: Path) -> list[str]:
    """The server's format, checked without segrepro: only PNGs at the root, one per test image (matched by
    ``<city>_<seq>_<frame>``), 8-bit single channel, the image's size, evaluated labelIds only."""
    from cityscapesscripts.helpers.labels import labels

    evaluated = {lab.id for lab in labels if not lab.ignoreInEval and lab.id >= 0}
    images = {"_".join(p.name.split("_")[:3]): p for p in (data_root / "leftImg8bit" / "test").glob("*/*.png")}
    problems, seen = [], []
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if "/" in name or not name.endswith(".png"):
                problems.append(f"{name}: not a PNG at the root")
                continue
            key = "_".join(name.split("_")[:3])
            seen.append(key)
            with Image.open(io.BytesIO(zf.read(name))) as im, Image.open(images[key]) as ref:
                if im.mode != "L" or im.size != ref.size:
                    problems.append(f"{name}: {im.mode} {im.size}")
                if not set(np.unique(np.asarray(im)).tolist()) <= evaluated:
                    problems.append(f"{name}: values outside the evaluated labelIds")
    if sorted(seen) != sorted(images):
        problems.append(f"{len(seen)} predictions for {len(images)} test images")
    return problems


def test_predict_then_package_apart_and_mlflow_record(city: Path, checkpoint: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`submit predict` and `submit package` run on their own; the archive passes an independent format check
    and the MLflow submit run records the sha256 of the archive and of its manifest."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    preds, out = tmp_path / "preds", tmp_path / "sub.zip"
    assert main_exit(["submit", "predict", "--method", "alignseg", "--checkpoint", str(checkpoint), "--data",
                      str(city), "--out", str(preds), "--params", str(PARAMS), "--device", "cpu",
                      "--workers", "0"]) == 0
    assert (preds / MANIFEST).is_file()
    summary = stages.submit_package(preds, out, city)
    assert server_format_problems(out, city) == []
    assert validate_archive(out, city).predictions == 3
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.params["archive_sha256"] == sha256_file(out)
    assert run.data.params["manifest_sha256"] == sha256_file(manifest_path(out))
    assert run.data.tags["stage"] == "submit"
    (preds / sorted(p.name for p in preds.glob("*.png"))[0]).unlink()
    assert main_exit(["submit", "package", "--pred", str(preds), "--out", str(tmp_path / "b.zip"), "--data", str(city),
                      "--no-mlflow"]) == 1  # one prediction missing: refused, nothing written
    assert not (tmp_path / "b.zip").exists()
