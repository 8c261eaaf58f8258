"""Stage functions: one per CLI subcommand, DVC stage and Kubeflow component (same names).

Each stage resolves its configuration from params.yaml (plus ``--set`` overrides), calls into the
layers and returns a small JSON-able summary. The CLI, dvc.yaml and the pipelines call only these.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from segrepro.engine.config import apply_overrides, load_params, resolve_recipe
from segrepro.errors import UserError
from segrepro.io import atomic_write_text

log = logging.getLogger(__name__)


def resolved_config(method: str, recipe: str | None, overrides: Sequence[str], params_path: Path) -> tuple[dict, dict]:
    params = apply_overrides(load_params(params_path), overrides)
    return params, resolve_recipe(params, method, recipe)


def _data_root(params: dict, dataset: str, data: Path | None) -> Path:
    root = Path(data) if data is not None else Path((params.get("data") or {}).get(dataset, f"data/{dataset}"))
    if not root.is_dir():
        raise UserError(
            f"{root}: {dataset} dataset not found; create the synthetic one with `segrepro data synth {dataset} "
            f"--out {root}` or point --data / params.yaml data.{dataset} at the real dataset root"
        )
    return root


def export_weights(checkpoint: Path, dst: Path) -> None:
    """Write the plain model state_dict of a training checkpoint to ``dst`` (atomically)."""
    import torch

    from segrepro.io import atomic_path

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    with atomic_path(dst) as tmp:
        torch.save(state["model"], tmp)


def train(
    method: str,
    recipe: str | None = None,
    data: Path | None = None,
    out: Path | None = None,
    resume: bool = True,
    overrides: Sequence[str] = (),
    params_path: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Train ``method`` with its recipe; one MLflow run (rank 0); returns the summary written to ``out``."""
    import torch

    from segrepro.data import get_dataset, get_spec
    from segrepro.data.transforms import build_transforms
    from segrepro.data.validate import default_prepared_dir
    from segrepro.engine import objectives
    from segrepro.engine.distributed import cleanup, init_distributed
    from segrepro.engine.objectives import iterations_for
    from segrepro.engine.trainer import train as run_training
    from segrepro.evaluation.quick_val import quick_validate, quick_validate_ssl
    from segrepro.models import build
    from segrepro.tracking.mlflow_tracker import MlflowTracker, dvc_data_hash, environment_tags, git_state

    params, cfg = resolved_config(method, recipe, overrides, params_path)
    dataset_name = str(cfg["dataset"])
    root = _data_root(params, dataset_name, data)
    prepared = default_prepared_dir(root)
    reader_kwargs = {"prepared": prepared} if prepared.is_dir() and dataset_name == "cityscapes" else {}
    out = Path(out or Path("runs") / method)
    out.mkdir(parents=True, exist_ok=True)
    crop = cfg.get("crop")
    crop = tuple(crop) if isinstance(crop, list) else crop
    self_supervised = cfg.get("objective") == "self_supervised"

    dist = init_distributed(str(cfg.get("device", "auto")))
    spec = get_spec(dataset_name)
    num_classes = cfg.get("num_classes") or (None if self_supervised else spec.num_classes)
    model = build(method, variant=cfg.get("variant"), num_classes=num_classes, pretrained=cfg.get("pretrained"))
    train_set = get_dataset(dataset_name, root, str(cfg.get("train_split", "train")), **reader_kwargs)
    cfg["iterations"] = iterations_for(cfg, len(train_set))
    if self_supervised:
        make_objective = lambda m: objectives.self_supervised(cfg, m, len(train_set))  # noqa: E731
    else:
        make_objective = lambda m: objectives.supervised(cfg, m)  # noqa: E731
    tracker = None
    if dist.is_main:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        tags = {
            "method": method, "recipe": cfg["recipe"], "dataset": dataset_name, "stage": "train",
            "variant": str(cfg.get("variant")), **git_state(), **environment_tags(dist.world_size),
        }
        data_hash = dvc_data_hash(root)
        if data_hash:
            tags["dvc_data_hash"] = data_hash
        tracker = MlflowTracker(run_name=f"{method}-{cfg['recipe']}", tags=tags, params=cfg)
    status = "FAILED"
    try:
        result = run_training(
            cfg, model, train_set, lambda g: build_transforms(method, True, crop, generator=g), make_objective,
            out, dist, resume=resume, tracker=tracker,
        )
        summary: dict[str, Any] = {
            "method": method, "recipe": cfg["recipe"], "iterations": result.iterations,
            "checkpoint": str(result.final_checkpoint), "seconds_per_iter": result.seconds_per_iter,
        }
        if dist.is_main:
            export_weights(result.final_checkpoint, out / "model.pt")
            summary["model"] = str(out / "model.pt")
            val_split = str(cfg.get("val_split", "val"))
            val_set = get_dataset(dataset_name, root, val_split, transform=build_transforms(method, False, crop if self_supervised else None), **reader_kwargs)
            if self_supervised:
                scores = quick_validate_ssl(model, val_set, dist.device)
                summary["val_mIoU"] = scores["mIoU"]
                summary["val_protocol"] = scores["protocol"]
            else:
                summary["val_mIoU"] = quick_validate(model, val_set, spec.num_classes, dist.device).miou
            tracker.log_metrics({"val_mIoU": summary["val_mIoU"]}, step=result.iterations)
            tracker.log_checkpoint(result.final_checkpoint, "final")
            summary["mlflow_run_id"] = tracker.run_id
            atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=2))
        status = "FINISHED"
        return summary
    finally:
        if tracker is not None:
            tracker.end(status)
        cleanup()
