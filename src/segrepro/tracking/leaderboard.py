"""The leaderboard: one row per method and recipe, built only from what the run folders hold.

Each ``runs/<method>/`` holds ``config.yaml`` (resolved recipe), ``train_summary.json`` and
``eval/eval_summary.json`` (headline metrics, protocol) + ``eval/per_class.csv``. Missing pieces
stay empty (NaN), never guessed. Outputs: Markdown, CSV, the HTML page (rendered by
:mod:`segrepro.tracking.leaderboard_page`, kept apart from the row computation) and a DVC metrics JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from segrepro.errors import UserError
from segrepro.io import atomic_write_text
from segrepro.tracking.leaderboard_page import to_html, to_markdown
from segrepro.tracking.paper_results import PaperResult, no_delta_reason, paper_label

SUMMARY_COLUMNS = [
    "method",
    "recipe",
    "dataset",
    "split",
    "backbone",
    "protocol",
    "paper_mIoU",
    "paper_split",
    "paper_source",
    "mIoU",
    "delta",
    "delta_note",
    "archive",
    "iIoU",
    "category_IoU",
    "params_M",
    "GFLOPs",
    "train_s_per_iter",
    "eval_img_per_s",
    "peak_mem_MB",
    "train_hours",
    "git_sha",
    "data_hash",
    "mlflow_run",
]
CLASS_PREFIX = "IoU/"
FLOPS_SIZE = {"cityscapes": (1024, 2048)}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg}); rerun the stage that writes it") from None


def _pct(value: Any) -> float:
    """Scores in [0, 1] → percent; NaN stays NaN (the official JSON writes absent classes as NaN)."""
    return float(value) * 100.0 if value is not None else math.nan


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def model_size(method: str, variant: str, dataset: str, num_classes: int | None) -> tuple[float, float]:
    """(parameters in millions, GFLOPs of one eval forward); FLOPs NaN when the counter cannot trace it."""
    import torch

    from segrepro.models import build
    from segrepro.models.bench import SQUARE_ONLY, count_flops, count_params

    with torch.device("meta"):  # shapes only: no memory, no init time, even for R101
        params = count_params(build(method, variant=variant, num_classes=num_classes)) / 1e6
    size = SQUARE_ONLY.get(method, FLOPS_SIZE.get(dataset, (512, 512)))
    try:
        gflops = count_flops(method, variant, size) / 1e9
    except Exception:  # optional figure: some attention ops have no meta/FLOP rule
        gflops = math.nan
    return params, gflops


def run_row(
    run_dir: Path, mlflow_info: dict[str, str] | None = None, papers: dict[tuple[str, str], PaperResult] | None = None
) -> dict[str, Any] | None:
    """One leaderboard row from a run folder; None when it has neither training nor evaluation results.
    ``papers`` (:func:`~segrepro.tracking.paper_results.paper_index`) gives the published numbers."""
    config_path = run_dir / "config.yaml"
    summary = _read_json(run_dir / "train_summary.json")
    evaluation = _read_json(run_dir / "eval" / "eval_summary.json")
    if not summary and not evaluation:
        return None
    cfg = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    method = str(summary.get("method") or evaluation.get("method") or run_dir.name)
    recipe = str(summary.get("recipe") or cfg.get("recipe") or "?")
    variant = cfg.get("variant") or evaluation.get("variant")
    dataset = str(cfg.get("dataset") or "?")

    # the self-supervised method's comparable number is the official per-image protocol
    miou = _first(evaluation, "mIoU", "official_per_image_majority_mIoU")
    split = str(evaluation.get("split") or "")
    protocol = str(evaluation.get("protocol") or "")
    if miou is None and summary.get("val_mIoU") is not None:
        miou, split, protocol = summary["val_mIoU"], str(cfg.get("val_split") or "val"), "quick val (training)"
    archive = run_dir / "submission.zip"  # where `submit build` writes it in the pipeline (dvc.yaml)
    row: dict[str, Any] = {
        "method": method,
        "recipe": recipe,
        "dataset": dataset,
        "split": split,
        "backbone": variant,
        "protocol": f"{split} {protocol}".strip(),
        "mIoU": _pct(miou),
        "iIoU": _pct(_first(evaluation, "iIoU")),
        "category_IoU": _pct(_first(evaluation, "category_IoU")),
        "archive": str(archive) if archive.is_file() else "",
    }
    paper = (papers or {}).get((method, recipe))
    row["delta"] = math.nan
    if paper is not None:
        row["paper_mIoU"], row["paper_split"] = paper.miou, paper.split
        row["paper_source"] = f"{paper.source}; {paper.split}, {paper.protocol}"
        synthetic = paper.twin_of is not None or variant == "tiny"
        row["delta_note"] = no_delta_reason(paper, split, protocol, synthetic, row["archive"])
        if not row["delta_note"]:
            row["delta"] = row["mIoU"] - paper.miou
    else:
        row["paper_mIoU"], row["paper_split"], row["paper_source"] = paper_label(recipe, variant), "", ""
        row["delta_note"] = "no Δ: no published number for this recipe"
    per_class = run_dir / "eval" / "per_class.csv"
    if per_class.is_file():
        for _, entry in pd.read_csv(per_class).iterrows():
            row[CLASS_PREFIX + str(entry["class"])] = _pct(entry["IoU"])

    if variant is not None:
        row["params_M"], row["GFLOPs"] = model_size(method, str(variant), dataset, cfg.get("num_classes"))
    spi = summary.get("seconds_per_iter")
    row["train_s_per_iter"] = float(spi) if spi is not None else math.nan
    iters = summary.get("iterations")
    row["train_hours"] = float(spi) * int(iters) / 3600.0 if spi is not None and iters is not None else math.nan
    row["eval_img_per_s"] = _first(evaluation, "eval_img_per_s")  # measured by `evaluate`
    row["peak_mem_MB"] = _first(evaluation, "peak_mem_MB")
    info = mlflow_info or {}
    row["git_sha"] = info.get("git_sha", "")
    row["data_hash"] = info.get("dvc_data_hash", "")
    row["mlflow_run"] = info.get("link", summary.get("mlflow_run_id", ""))
    return row


def build_leaderboard(
    runs: Path,
    methods: list[str] | None,
    mlflow_info: dict[str, dict[str, str]] | None = None,
    papers: dict[tuple[str, str], PaperResult] | None = None,
) -> pd.DataFrame:
    """Rows for ``methods`` (all run folders when None), grouped by dataset and split (like with like),
    each group sorted by reproduced mIoU."""
    if not runs.is_dir():
        raise UserError(f"{runs}: runs folder not found; train and evaluate first (`dvc repro` or `segrepro train`)")
    folders = [runs / m for m in methods] if methods else sorted(p for p in runs.iterdir() if p.is_dir())
    rows = []
    for folder in folders:
        run_id = _read_json(folder / "train_summary.json").get("mlflow_run_id", "")
        row = run_row(folder, (mlflow_info or {}).get(run_id), papers)
        if row is not None:
            rows.append(row)
    if not rows:
        raise UserError(
            f"{runs}: no run folder with train_summary.json or eval/eval_summary.json; run the pipeline first"
        )
    table = pd.DataFrame(rows)
    class_cols = [c for c in table.columns if c.startswith(CLASS_PREFIX)]
    table = table.reindex(columns=SUMMARY_COLUMNS + class_cols)
    return table.sort_values(
        ["dataset", "split", "mIoU"], ascending=[True, True, False], na_position="last"
    ).reset_index(drop=True)


def metrics_json(table: pd.DataFrame) -> dict[str, Any]:
    """DVC metrics: reproduced mIoU (and Δ when a paper number exists) per method/recipe."""
    out: dict[str, Any] = {}
    for _, row in table.iterrows():
        entry = {k: float(row[k]) for k in ("mIoU", "iIoU", "category_IoU", "delta") if not pd.isna(row[k])}
        out[f"{row['method']}/{row['recipe']}"] = entry
    return out


def write_outputs(table: pd.DataFrame, out: Path) -> dict[str, Path]:
    """leaderboard.{md,csv,html} and metrics.json in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / f"leaderboard.{k}" for k in ("md", "csv", "html")}
    files["metrics"] = out / "metrics.json"
    atomic_write_text(files["md"], to_markdown(table))
    atomic_write_text(files["csv"], table.to_csv(index=False))
    atomic_write_text(files["html"], to_html(table))
    atomic_write_text(files["metrics"], json.dumps(metrics_json(table), indent=2) + "\n")
    return files
