"""Evaluation outputs: metrics.json, per-class CSV, confusion heat map, per-class bar chart, MLflow record.

Every metric family (Cityscapes official, plain confusion-matrix mIoU, the two self-supervised protocols)
is first turned into one :class:`EvalReport`, so writing files and logging are the same code for all.
Matplotlib (Agg) is imported only when plotting; MLflow only through the tracker handed in.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segrepro.data import cityscapes_labels
from segrepro.evaluation.cityscapes_metrics import CityscapesResult
from segrepro.evaluation.confusion import SegScores
from segrepro.io import atomic_write_bytes, atomic_write_text


@dataclass
class EvalReport:
    """Headline metrics (MLflow scalars), per-class rows, an optional class×class confusion, the full JSON."""

    metrics: dict[str, float]
    rows: list[dict[str, Any]]  # {"class": name, "IoU": ..., other columns}
    json_dict: dict[str, Any]
    confusion: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)


def cityscapes_report(result: CityscapesResult) -> EvalReport:
    """Official fields as metrics.json; 19×19 confusion over the evaluated labelIds in trainId order."""
    avg = result.average_scores
    metrics = {
        "mIoU": avg["averageScoreClasses"],
        "iIoU": avg["averageScoreInstClasses"],
        "category_IoU": avg["averageScoreCategories"],
        "category_iIoU": avg["averageScoreInstCategories"],
    }
    labels = cityscapes_labels.train_classes()
    names = [lab.name for lab in labels]
    rows = [{"class": n, "IoU": result.class_scores[n], "iIoU": result.class_inst_scores[n]} for n in names]
    ids = [lab.id for lab in labels]
    confusion = np.asarray(result.conf_matrix)[np.ix_(ids, ids)]
    return EvalReport(metrics, rows, result.to_json_dict(), confusion, names)


def scores_report(scores: SegScores, matrix: np.ndarray, class_names: list[str]) -> EvalReport:
    """mIoU / pixel accuracy of a :class:`ConfusionMatrix` (the last, out-of-range column is dropped)."""
    rows = [
        {"class": n, "IoU": float(i), "accuracy": float(a)}
        for n, i, a in zip(class_names, scores.iou, scores.class_accuracy, strict=True)
    ]
    metrics = {
        "mIoU": scores.miou,
        "pixel_accuracy": scores.pixel_accuracy,
        "mean_class_accuracy": scores.mean_class_accuracy,
    }
    n = len(class_names)
    return EvalReport(metrics, rows, scores.as_dict(class_names), np.asarray(matrix)[:n, :n], class_names)


def ssl_report(per_image: dict[str, Any], hungarian: dict[str, Any], class_names: list[str]) -> EvalReport:
    """Both self-supervised protocols, named apart: the official per-image majority vote and the standard
    dataset-level Hungarian matching."""
    metrics = {
        "official_per_image_majority_mIoU": per_image["mIoU"],
        "official_per_image_majority_mIoU_exclude_first": per_image["mIoU_exclude_first"],
        "dataset_hungarian_mIoU": hungarian["mIoU"],
        "dataset_hungarian_pixel_accuracy": hungarian["pixel_accuracy"],
    }
    rows = [{"class": n, "IoU": float(i)} for n, i in zip(class_names, hungarian["iou"], strict=True)]
    return EvalReport(
        metrics, rows, {"official_per_image_majority": per_image, "dataset_hungarian": hungarian}, None, class_names
    )


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def plot_confusion(confusion: np.ndarray, names: list[str], path: Path) -> None:
    """Row-normalised heat map (recall per GT class), so rare classes are as readable as road."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    m = confusion.astype(np.float64)
    m = np.divide(m, m.sum(1, keepdims=True), out=np.zeros_like(m), where=m.sum(1, keepdims=True) > 0)
    size = max(4.0, 0.4 * len(names))
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.colorbar(im, ax=ax, fraction=0.046)
    atomic_write_bytes(path, _png(fig))


def plot_per_class(rows: list[dict[str, Any]], path: Path, key: str = "IoU") -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [r["class"] for r in rows]
    values = [0.0 if math.isnan(r[key]) else r[key] for r in rows]
    fig = Figure(figsize=(max(5.0, 0.35 * len(names)), 3.5))
    ax = fig.subplots()
    ax.bar(range(len(names)), values, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel(key)
    atomic_write_bytes(path, _png(fig))


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """metrics.json, per_class.csv and the two plots in ``out_dir`` (each written atomically)."""
    out_dir = Path(out_dir)
    files = {"json": out_dir / "metrics.json", "csv": out_dir / "per_class.csv", "bar": out_dir / "per_class_iou.png"}
    atomic_write_text(files["json"], json.dumps(report.json_dict, indent=2, sort_keys=True) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(report.rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.rows)
    atomic_write_text(files["csv"], buf.getvalue())
    plot_per_class(report.rows, files["bar"])
    if report.confusion is not None:
        files["heatmap"] = out_dir / "confusion.png"
        plot_confusion(report.confusion, report.class_names, files["heatmap"])
    return files


class Tracker(Protocol):
    """What logging needs from :class:`segrepro.tracking.mlflow_tracker.MlflowTracker`."""

    @property
    def mlflow(self) -> Any: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_file(self, path: Path, artifact_path: str | None = None) -> None: ...


def log_report(tracker: Tracker, report: EvalReport, files: dict[str, Path]) -> None:
    """Headline and per-class metrics (``IoU/<class>``), the per-class table and every file as artifacts."""
    scalars = dict(report.metrics)
    scalars.update({f"IoU/{r['class']}": r["IoU"] for r in report.rows})
    tracker.log_metrics({k: v for k, v in scalars.items() if not math.isnan(v)}, step=0)
    columns = {key: [r[key] for r in report.rows] for key in report.rows[0]}
    tracker.mlflow.log_table(data=columns, artifact_file="per_class_iou.json")
    for path in files.values():
        tracker.log_file(path, artifact_path="eval")
