"""Dataset-level prediction: run a protocol over a split and hand each prediction to a consumer.

Used by ``segrepro evaluate`` (metrics, saved PNGs, overlays) and ``segrepro submit build`` (labelId PNGs).
Predictions stay on the device until a consumer needs them on the host (PNG writing).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from segrepro.data import cityscapes_labels
from segrepro.evaluation.inference import Protocol, predict_classes
from segrepro.evaluation.report import EvalReport
from segrepro.io import atomic_write_bytes
from segrepro.models.outputs import main_logits

if TYPE_CHECKING:
    from segrepro.engine.recipe import Recipe

PNG_KINDS = ("trainIds", "labelIds")


@dataclass
class Prediction:
    """One image's argmax map (trainIds / cluster ids, on the device) and the sample's metadata."""

    classes: Tensor
    sample: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.sample.get("name", self.sample.get("index")))


def _first(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


def iter_predictions(
    model: nn.Module,
    dataset: Dataset,
    protocol: Protocol,
    device: torch.device,
    skip: Callable[[int], bool] | None = None,
    workers: int = 0,
    tile_batch: int = 4,
    desc: str = "predict",
) -> Iterator[Prediction]:
    """Predict every sample (``image`` normalised CHW) of ``dataset``; ``skip(i)`` leaves sample ``i`` out
    (resuming a submission). One image at a time: Cityscapes images differ in nothing but content, and
    the protocol batches the tiles."""
    model.eval().to(device)
    indices = [i for i in range(len(cast(Sized, dataset))) if skip is None or not skip(i)]
    subset = torch.utils.data.Subset(dataset, indices)
    loader = DataLoader(subset, batch_size=1, num_workers=workers, collate_fn=_first)
    for index, sample in zip(indices, tqdm(loader, desc=f"{desc} ({protocol.name})", unit="img"), strict=True):
        image = sample["image"].to(device, non_blocking=True)
        yield Prediction(predict_classes(model, image, protocol, tile_batch), {**sample, "index": index})


def png_bytes(array: np.ndarray) -> bytes:
    """8-bit single-channel PNG (mode L) without metadata."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def to_label_ids(train_ids: Tensor | np.ndarray) -> np.ndarray:
    """trainIds 0..18 → Cityscapes labelIds (what the evaluator and the test server read)."""
    arr = train_ids.cpu().numpy() if isinstance(train_ids, Tensor) else np.asarray(train_ids)
    return cityscapes_labels.train_to_label_lut()[arr.astype(np.uint8)]


def save_prediction(classes: Tensor | np.ndarray, path: Path, kind: str = "labelIds") -> None:
    """Write one prediction PNG atomically, as trainIds or (Cityscapes) labelIds."""
    arr = classes.cpu().numpy() if isinstance(classes, Tensor) else np.asarray(classes)
    atomic_write_bytes(path, png_bytes(to_label_ids(arr) if kind == "labelIds" else arr.astype(np.uint8)))


def overlay(
    image_rgb: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5, palette: np.ndarray | None = None
) -> np.ndarray:
    """Blend ``palette`` (default: Cityscapes by trainId) of ``train_ids`` over the RGB image; ids outside
    the palette stay black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    colours = cityscapes_labels.colors() if palette is None else np.asarray(palette, dtype=np.uint8)
    lut[: len(colours)] = colours
    colour = lut[train_ids.astype(np.uint8)].astype(np.float32)
    return (image_rgb.astype(np.float32) * (1 - alpha) + colour * alpha).round().astype(np.uint8)


def save_overlay(image_path: Path, classes: Tensor, path: Path, palette: np.ndarray | None = None) -> None:
    with Image.open(image_path) as im:
        rgb = np.asarray(im.convert("RGB"))
    arr = classes.cpu().numpy()
    if arr.shape != rgb.shape[:2]:
        arr = np.asarray(Image.fromarray(arr.astype(np.uint8)).resize(rgb.shape[1::-1], Image.Resampling.NEAREST))
    buf = io.BytesIO()
    Image.fromarray(overlay(rgb, arr, palette=palette)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def _save(
    pred: Prediction, save_pred: Path | None, pred_kind: str, overlay_dir: Path, overlays: int, palette: np.ndarray
) -> None:
    city, name = str(pred.sample.get("city", "")), pred.name
    if save_pred is not None:
        save_prediction(pred.classes, Path(save_pred) / city / f"{name}_pred_{pred_kind}.png", pred_kind)
    if pred.sample["index"] < overlays and "image_path" in pred.sample:
        save_overlay(Path(pred.sample["image_path"]), pred.classes, overlay_dir / f"{name}_overlay.png", palette)


def run_evaluation(
    cfg: Recipe,
    model: nn.Module,
    root: Path,
    split: str,
    protocol: Protocol,
    device: torch.device,
    save_pred: Path | None = None,
    pred_kind: str = "labelIds",
    overlays: int = 4,
    overlay_dir: Path = Path("overlays"),
    workers: int = 0,
    tile_batch: int = 4,
) -> EvalReport:
    """Metrics of ``model`` on a split of ``cfg``'s dataset, read through ``cfg``'s eval transform: the
    official Cityscapes evaluator (labelIds + instanceIds), both self-supervised protocols for a
    self-supervised recipe, a confusion matrix on the reader's labels otherwise."""
    from segrepro.data import get_dataset, get_spec
    from segrepro.data.cityscapes import gt_path
    from segrepro.data.palette import class_palette
    from segrepro.data.transforms import build_eval_transforms
    from segrepro.errors import UserError
    from segrepro.evaluation.cityscapes_metrics import CityscapesEvaluator
    from segrepro.evaluation.confusion import ConfusionMatrix, LabelConvention
    from segrepro.evaluation.report import cityscapes_report, scores_report

    if pred_kind not in PNG_KINDS:
        raise UserError(f"--pred-kind {pred_kind!r}: choose one of {', '.join(PNG_KINDS)}")
    dataset_name = cfg.dataset
    spec = get_spec(dataset_name)
    if dataset_name == "cityscapes" and split == "test":
        raise UserError(
            "Cityscapes test labels are withheld; evaluate val, or build an archive with `segrepro submit build`"
        )
    dataset = get_dataset(dataset_name, root, split, transform=build_eval_transforms(cfg.norm(), *cfg.eval_sizes()))
    names = list(spec.class_names)
    palette = class_palette(dataset_name)
    if cfg.self_supervised:
        return _run_ssl(model, dataset, dataset_name, names, device, workers)
    if dataset_name == "cityscapes":
        evaluator = CityscapesEvaluator(device)
        lut = torch.from_numpy(cityscapes_labels.train_to_label_lut()).to(device)
        for pred in iter_predictions(model, dataset, protocol, device, workers=workers, tile_batch=tile_batch):
            city, stem = str(pred.sample["city"]), pred.name
            gt = _read_png(gt_path(Path(root), split, city, stem, "labelIds"))
            inst = _read_png(gt_path(Path(root), split, city, stem, "instanceIds")).astype(np.int32)
            evaluator.update(lut[pred.classes], gt, inst)
            _save(pred, save_pred, pred_kind, overlay_dir, overlays, palette)
        return cityscapes_report(evaluator.compute())
    classes = cfg.model_num_classes() or spec.num_classes
    cm = ConfusionMatrix(LabelConvention("train_ids", classes, cfg.ignore_index), device=device)
    pred_kind = "trainIds"  # labelIds exist only for Cityscapes
    for pred in iter_predictions(model, dataset, protocol, device, workers=workers, tile_batch=tile_batch):
        cm.update(pred.classes, pred.sample["label"].to(device))
        _save(pred, save_pred, pred_kind, overlay_dir, overlays, palette)
    return scores_report(cm.compute(), cm.matrix.cpu().numpy(), names)


@torch.no_grad()
def _run_ssl(
    model: nn.Module, dataset: Dataset, dataset_name: str, names: list[str], device: torch.device, workers: int
) -> EvalReport:
    """AlignSeg-SSL (reference alignseg_ssl.md §5): patch-level argmax, nearest up to the 100² label."""
    from segrepro.evaluation.confusion import CONVENTIONS, LabelConvention
    from segrepro.evaluation.report import ssl_report
    from segrepro.evaluation.ssl_metrics import DatasetHungarianMIoU, PerImageMajorityVoteMIoU, resize_nearest

    model.eval().to(device)
    convention = CONVENTIONS.get(dataset_name, LabelConvention(dataset_name, len(names)))
    per_image: PerImageMajorityVoteMIoU | None = None
    hungarian: DatasetHungarianMIoU | None = None
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=_first)
    for sample in tqdm(loader, desc="evaluate (ssl)", unit="img"):
        scores = main_logits(model, sample["image"].to(device)[None])
        clusters = resize_nearest(scores.argmax(1)[0], sample["label"].shape[-1])
        if per_image is None:
            per_image = PerImageMajorityVoteMIoU(scores.shape[1])
            hungarian = DatasetHungarianMIoU(convention, scores.shape[1], device=device)
        assert hungarian is not None  # made with per_image
        per_image.update(clusters, sample["label"].to(device))
        hungarian.update(clusters, sample["label"].to(device))
    assert per_image is not None and hungarian is not None
    return ssl_report(per_image.compute(), hungarian.compute(), names)
