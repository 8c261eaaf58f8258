"""Stage functions: one per CLI subcommand, DVC stage and Kubeflow component (same names).

Each stage resolves its configuration from params.yaml (plus ``--set`` overrides), calls into the
layers and returns a small JSON-able summary. The CLI, dvc.yaml and the pipelines call only these.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from segrepro.engine.config import apply_overrides, load_params, resolve_recipe
from segrepro.engine.recipe import BatchLayout, Recipe, batch_layout, validate_params
from segrepro.errors import RecipeError, UserError
from segrepro.io import atomic_write_text

log = logging.getLogger(__name__)


def resolved_config(
    method: str, recipe: str | None, overrides: Sequence[str], params_path: Path
) -> tuple[dict, Recipe]:
    """params.yaml (+ ``--set``), checked as a whole, and ``method``'s validated recipe: before any work."""
    params = apply_overrides(load_params(params_path), overrides)
    validate_params(params)
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


@dataclass(frozen=True)
class InitWeights:
    """The trained weights a multi-stage recipe starts from (``init_from``), and their digest for the record."""

    source: str  # "<method>/<recipe>"
    path: Path
    sha256: str

    def record(self) -> dict[str, str]:
        """What train_summary.json and the MLflow params keep (``init_from`` itself is a recipe key)."""
        return {"init_checkpoint": str(self.path), "init_sha256": self.sha256}

    def load_into(self, model: Any) -> None:
        """Load the state_dict strictly: a stage must continue the very model the previous one trained."""
        import torch

        state = torch.load(self.path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except (RuntimeError, AttributeError, TypeError) as err:
            first = " ".join(str(err).split())[:300]
            raise UserError(
                f"{self.path}: the {self.source} weights do not fit this recipe's model ({first}); "
                "give both stages the same variant and num_classes",
                exit_code=2,
            ) from None


def init_weights(cfg: Recipe, out: Path, init: Path | None = None) -> InitWeights | None:
    """The weights ``cfg.init_from`` names (``init``, else ``<method>-<recipe>/model.pt`` beside ``out``)."""
    from segrepro.data.manifest import sha256_file

    if cfg.init_from is None:
        if init is not None:
            raise UserError(
                f"--init {init}: recipes.{cfg.method}.{cfg.recipe} has no init_from; drop --init or "
                "add init_from: <method>/<recipe> to the recipe",
                exit_code=2,
            )
        return None
    first_method, _, first_recipe = cfg.init_from.partition("/")
    path = Path(init) if init is not None else Path(out).parent / f"{first_method}-{first_recipe}" / "model.pt"
    if not path.is_file():
        raise UserError(
            f"{path}: trained weights of {cfg.init_from} not found (recipes.{cfg.method}.{cfg.recipe}."
            f"init_from); train that stage first: segrepro train --method {first_method} --recipe "
            f"{first_recipe} --out {path.parent}",
            exit_code=2,
        )
    return InitWeights(cfg.init_from, path, sha256_file(path))


class TrainInputs(NamedTuple):
    """What a training needs, checked before any output: by :func:`train` on every rank, and once by a
    launcher (``segrepro train --nproc``) before it starts the processes, so a bad input is one line, not one
    per rank."""

    params: dict[str, Any]
    cfg: Recipe
    root: Path
    out: Path
    start: InitWeights | None
    layout: BatchLayout


def check_train(
    method: str,
    recipe: str | None,
    data: Path | None,
    out: Path | None,
    overrides: Sequence[str],
    params_path: Path,
    init: Path | None,
    world_size: int,
) -> TrainInputs:
    from segrepro.tracking.mlflow_tracker import require_mlflow

    require_mlflow("training (one MLflow run per training)")  # on every rank, before the process group forms
    params, cfg = resolved_config(method, recipe, overrides, params_path)
    root = _data_root(params, cfg.dataset, data)
    run = Path(out or Path("runs") / method)
    start = init_weights(cfg, run, init)  # a missing first stage fails before any output
    layout = batch_layout(cfg, world_size)  # refuses a batch that does not split, before any output
    return TrainInputs(params, cfg, root, run, start, layout)


def train(
    method: str,
    recipe: str | None = None,
    data: Path | None = None,
    out: Path | None = None,
    resume: bool = True,
    overrides: Sequence[str] = (),
    params_path: Path = Path("params.yaml"),
    init: Path | None = None,
) -> dict[str, Any]:
    """Train ``method`` with its recipe; one MLflow run (rank 0); returns the summary written to ``out``.

    A multi-stage recipe (``init_from: <method>/<recipe>``) starts from that run's weights: ``init``, by
    default ``<method>-<recipe>/model.pt`` beside ``out`` (the benchmark row's run folder, runs/<row>).
    """
    import torch

    from segrepro.data import get_dataset
    from segrepro.data.transforms import build_eval_transforms, build_train_transforms
    from segrepro.data.validate import default_prepared_dir
    from segrepro.engine import objectives
    from segrepro.engine.distributed import cleanup, env_world_size, init_distributed, lost_peer
    from segrepro.engine.trainer import train as run_training
    from segrepro.evaluation.quick_val import quick_validate, quick_validate_ssl
    from segrepro.models import build
    from segrepro.tracking.mlflow_tracker import MlflowTracker, dvc_data_hash, environment_tags, git_state

    params, cfg, root, out, start, layout = check_train(
        method, recipe, data, out, overrides, params_path, init, env_world_size()
    )  # env_world_size: the group init_distributed joins below
    dataset_name = cfg.dataset
    prepared = default_prepared_dir(root)
    reader_kwargs = {"prepared": prepared} if prepared.is_dir() and dataset_name == "cityscapes" else {}
    dist = init_distributed(cfg.device)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    model = build(method, variant=cfg.variant, num_classes=cfg.model_num_classes(), pretrained=cfg.pretrained)
    if start is not None:
        start.load_into(model)
    train_set = get_dataset(dataset_name, root, cfg.train_split, **reader_kwargs)
    iterations = cfg.total_iterations(len(train_set))
    if cfg.self_supervised:
        make_objective = lambda m: objectives.self_supervised(cfg, m, len(train_set))  # noqa: E731
    else:
        make_objective = lambda m: objectives.supervised(cfg, m, iterations)  # noqa: E731
    tracker = None
    if dist.is_main:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.record(), sort_keys=False))
        tags = {
            "method": method,
            "recipe": cfg.recipe,
            "dataset": dataset_name,
            "stage": "train",
            "variant": str(cfg.variant),
            **git_state(),
            **environment_tags(dist.world_size),
        }
        data_hash = dvc_data_hash(root)
        if data_hash:
            tags["dvc_data_hash"] = data_hash
        # the recipe as validated, plus how this run cut its batch (the recipe's gpus is the paper's count)
        run_params = {**cfg.flat_params(), **layout.as_dict(), **(start.record() if start else {})}
        tracker = MlflowTracker(run_name=f"{method}-{cfg.recipe}", tags=tags, params=run_params, dataset=dataset_name)
        tracker.log_dataset(dataset_name, cfg.train_split, root, data_hash, "training")
    augment, norm = cfg.train_augment(), cfg.norm()
    status = "FAILED"
    try:
        result = run_training(
            cfg,
            model,
            train_set,
            lambda g: build_train_transforms(augment, norm, generator=g),
            make_objective,
            out,
            dist,
            iterations,
            resume=resume,
            tracker=tracker,
        )
        summary: dict[str, Any] = {
            "method": method,
            "recipe": cfg.recipe,
            "iterations": result.iterations,
            "checkpoint": str(result.final_checkpoint),
            "seconds_per_iter": result.seconds_per_iter,
            **layout.as_dict(),
            "gpus": cfg.gpus,
            **(start.record() if start else {}),
        }
        if dist.is_main:
            assert tracker is not None
            export_weights(result.final_checkpoint, out / "model.pt")
            summary["model"] = str(out / "model.pt")
            size, label_size = cfg.eval_sizes(at_train_crop=True)
            val_set = get_dataset(
                dataset_name,
                root,
                cfg.val_split,
                transform=build_eval_transforms(norm, size, label_size),
                **reader_kwargs,
            )
            if cfg.self_supervised:
                scores = quick_validate_ssl(model, val_set, dist.device)
                summary["val_mIoU"] = scores["mIoU"]
                summary["val_protocol"] = scores["protocol"]
            else:
                classes = cfg.model_num_classes()
                assert classes is not None
                summary["val_mIoU"] = quick_validate(model, val_set, classes, dist.device, cfg.ignore_index).miou
            tracker.log_metrics({"val_mIoU": summary["val_mIoU"]}, step=result.iterations)
            tracker.log_checkpoint(result.final_checkpoint, "final")
            summary["mlflow_run_id"] = tracker.run_id
            atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=2))
        status = "FINISHED"
        return summary
    except RuntimeError as err:
        lost = lost_peer(err, dist)
        if lost is None:
            raise
        raise lost from None
    finally:
        if tracker is not None:
            tracker.end(status)
        cleanup()


def synth(dataset: str, out: Path | None = None, params_path: Path = Path("params.yaml")) -> dict[str, str]:
    """The embedded default dataset: write ``synth.<dataset>`` of params.yaml, then validate + prepare it."""
    from segrepro.data import prepare_dataset, synth_dataset

    params = load_params(params_path)
    table = params.get("synth") or {}
    if dataset not in table:
        raise UserError(
            f"{params_path}: no synth.{dataset} entry; add one (size, split_sizes, seed) or pick one of {sorted(table)}"
        )
    cfg = table[dataset] or {}
    root = Path(out) if out is not None else Path((params.get("data") or {}).get(dataset, f"data/{dataset}"))
    written = synth_dataset(dataset, root, cfg.get("split_sizes"), cfg.get("size"), int(cfg.get("seed", 0)))
    prepared = prepare_dataset(dataset, written)
    return {"dataset": dataset, "root": str(written), "prepared": str(prepared)}


def leaderboard(
    runs: Path = Path("runs"),
    out: Path = Path("leaderboard"),
    params_path: Path = Path("params.yaml"),
    methods: Sequence[str] | None = None,
    log_mlflow: bool = True,
) -> dict[str, Any]:
    """Collect the run folders of ``methods`` (default: the params.yaml ``benchmark:`` rows, runs/<row>) into
    the leaderboard files; log them as a ``stage=leaderboard`` MLflow run and register each method's weights."""
    from segrepro.tracking.leaderboard import build_leaderboard, write_outputs
    from segrepro.tracking.mlflow_tracker import require_mlflow
    from segrepro.tracking.paper_results import paper_index
    from segrepro.tracking.registry import log_leaderboard, mlflow_run_info

    if log_mlflow:
        require_mlflow("the leaderboard's MLflow run", optional=True)
    params = load_params(params_path) if Path(params_path).is_file() else {}
    names = list(methods or params.get("benchmark") or [])
    runs = Path(runs)
    run_ids = {}
    for name in names or [p.name for p in runs.glob("*") if p.is_dir()]:
        summary_path = runs / name / "train_summary.json"
        if summary_path.is_file():
            summary_json = json.loads(summary_path.read_text())
            run_ids[str(summary_json.get("method") or name)] = str(summary_json.get("mlflow_run_id") or "")
    info = mlflow_run_info(run_ids.values()) if log_mlflow else {}
    table = build_leaderboard(runs, names or None, info, paper_index(params))
    files = write_outputs(table, Path(out))
    summary: dict[str, Any] = {"rows": len(table), "files": {k: str(v) for k, v in files.items()}}
    if log_mlflow:
        known = {m: r for m, r in run_ids.items() if r in info}
        summary["mlflow_run_id"] = log_leaderboard(table, files, known)
    return summary


# --- evaluate / submit ----------------------------------------------------------------------------


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_eval_model(method: str, checkpoint: Path, variant: str | None, num_classes: int | None) -> Any:
    """Build ``method`` and load a plain state_dict (or a training checkpoint's ``model``) strictly."""
    import torch

    from segrepro.models import build

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: checkpoint not found; pass the model.pt written by `segrepro train`")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(
            f"{checkpoint}: not a loadable state_dict ({type(err).__name__}); pass a plain "
            "state_dict such as runs/<method>/model.pt"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model = build(method, variant=variant, num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError) as err:
        first = " ".join(str(err).split())[:300]
        raise UserError(
            f"{checkpoint}: does not fit {method}/{variant or 'default'} ({first}); check --method and --variant"
        ) from None
    return model.eval()


def run_config(checkpoint: Path) -> tuple[Any, str] | None:
    """The recipe a checkpoint was trained with, as recorded: ``config.yaml`` beside it, else the training
    checkpoint's own ``config``; None for a checkpoint without one (e.g. from ``checkpoint import``)."""
    import torch

    beside = Path(checkpoint).parent / "config.yaml"
    if beside.is_file():
        try:
            return yaml.safe_load(beside.read_text()), str(beside)
        except yaml.YAMLError as err:
            raise UserError(f"{beside}: invalid YAML ({str(err).splitlines()[0]}); restore it from the run") from None
    if Path(checkpoint).is_file():
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception:
            return None  # load_eval_model reports an unreadable file
        if isinstance(state, dict) and isinstance(state.get("config"), dict):
            return state["config"], f"{checkpoint} (its config)"
    return None


@dataclass(frozen=True)
class TrainedModel:
    """A checkpoint, the recipe it came from and how to run it: what ``evaluate`` and ``submit build`` share.

    The run's own record (config.yaml beside the checkpoint, or the config inside a training checkpoint)
    is the recipe; params.yaml is read only for a checkpoint without one, through ``recipe``.
    """

    method: str
    checkpoint: Path
    variant: str | None = None  # default: the recipe's
    recipe: str | None = None  # only for checkpoints without a config; default: params.yaml train.<method>.recipe
    overrides: Sequence[str] = ()
    params_path: Path = Path("params.yaml")
    device: str = "auto"
    workers: int = 0  # image decode processes
    tile_batch: int = 4  # sliding-window tiles per forward pass
    strict_config: bool = False  # today's params.yaml differing from the run's config is an error

    def config(self) -> tuple[Recipe, str, str | None]:
        """(recipe, where it came from, a warning or None): the run's record, else params.yaml."""
        from segrepro.engine.recipe import differences, load_record

        recorded = run_config(self.checkpoint)
        if recorded is None:
            _, cfg = resolved_config(self.method, self.recipe, self.overrides, self.params_path)
            return cfg, f"{self.params_path} recipes.{self.method}.{cfg.recipe} (the checkpoint has no config)", None
        data, where = recorded
        cfg = load_record(data, where)
        if cfg.method != self.method:
            raise RecipeError(f"{where}: the run trained {cfg.method}, not {self.method}; pass --method {cfg.method}")
        if self.recipe is not None and self.recipe != cfg.recipe:
            raise RecipeError(
                f"--recipe {self.recipe}: the run's config ({where}) records recipe {cfg.recipe}; drop "
                "--recipe (it is only for checkpoints without a config)"
            )
        if not Path(self.params_path).is_file():
            return cfg, where, None
        try:
            _, today = resolved_config(self.method, cfg.recipe, self.overrides, self.params_path)
            changed = differences(cfg, today)
        except UserError as err:
            changed = [f"it no longer resolves ({err})"]
        if not changed:
            return cfg, where, None
        note = (
            f"{self.params_path} recipes.{self.method}.{cfg.recipe} differs from the run's config "
            f"({'; '.join(changed)}); using the run's config {where}"
        )
        if self.strict_config:
            raise RecipeError(f"{note} (--strict-config); retrain, or drop --strict-config")
        return cfg, where, note

    def root(self, cfg: Recipe, data: Path | None) -> Path:
        params = load_params(self.params_path) if data is None and Path(self.params_path).is_file() else {}
        return _data_root(params, cfg.dataset, data)

    def build(self, cfg: Recipe) -> Any:
        return load_eval_model(self.method, self.checkpoint, self.variant or cfg.variant, cfg.model_num_classes())


def _announce(trained: TrainedModel) -> tuple[Recipe, str]:
    """The run's recipe; says which config it is and warns (one line) when today's params.yaml differs."""
    cfg, source, warning = trained.config()
    if warning:
        log.warning(warning)
    log.info("%s: recipe %s from %s", trained.method, cfg.recipe, source)
    return cfg, source


def _run_recipe(method: str, checkpoint: Path, run: Path | None, params_path: Path) -> tuple[Recipe, str]:
    """The recipe that trained ``checkpoint`` and where it came from: ``<run>/config.yaml`` when ``--run`` is
    given, else the run's own record as ``evaluate`` reads it (:class:`TrainedModel`)."""
    if run is None:
        return _announce(TrainedModel(method, Path(checkpoint), params_path=params_path))
    from segrepro.engine.recipe import load_record

    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{path}: not found; --run must be a run folder written by `segrepro train`", exit_code=2)
    try:
        cfg = load_record(yaml.safe_load(path.read_text()), str(path))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML ({str(err).splitlines()[0]}); restore it from the run") from None
    if cfg.method != method:
        raise RecipeError(f"{path}: the run trained {cfg.method}, not {method}; pass --method {cfg.method}")
    return cfg, str(path)


def predict(
    method: str,
    checkpoint: Path,
    inputs: Sequence[str],
    run: Path | None = None,
    out: Path = Path("predictions"),
    protocol: str = "official",
    formats: str | None = None,
    alpha: float = 0.5,
    device: str = "auto",
    tile_batch: int = 4,
    params_path: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Predict image files, folders or globs with a trained model; overlays and label PNGs at input size."""
    import sys

    import numpy as np

    from segrepro.data import get_spec
    from segrepro.data.palette import class_palette
    from segrepro.data.transforms import build_eval_transforms
    from segrepro.evaluation.inference import resolve_protocol
    from segrepro.evaluation.predict_images import (
        SSL_QUERY_COLOURS,
        SSL_SIZE,
        ImagePredictor,
        Outputs,
        collect_inputs,
        parse_formats,
        predict_images,
    )

    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"--alpha {alpha}: must be between 0 (image only) and 1 (colours only)", exit_code=2)
    cfg, source = _run_recipe(method, checkpoint, run, params_path)
    dataset_name, self_supervised = cfg.dataset, cfg.self_supervised
    fmt = parse_formats(formats, label_ids=dataset_name == "cityscapes" and not self_supervised)
    images, problems = collect_inputs(inputs)
    if not images:
        raise UserError("no image to predict: " + "; ".join(problems), exit_code=2)
    proto = resolve_protocol(cfg.official_protocols(), protocol, "val")
    model = load_eval_model(method, checkpoint, cfg.variant, cfg.model_num_classes())
    # the run's own normalisation (and, self-supervised, the official 480² visualisation resize)
    transform = build_eval_transforms(cfg.norm(), (SSL_SIZE, SSL_SIZE) if self_supervised else None)
    dev = _device(device)
    if self_supervised:
        queries = int(model.clsQueries.weight.shape[0])
        names = [f"query {q}" for q in range(queries)]
        palette = SSL_QUERY_COLOURS[np.arange(queries) % len(SSL_QUERY_COLOURS)]
    else:
        names, palette = list(get_spec(dataset_name).class_names), class_palette(dataset_name)
    log.info(
        "predict: %s/%s from %s, %s, on %s",
        method,
        cfg.variant,
        source,
        "official 480² query maps" if self_supervised else proto.describe(),
        dev,
    )
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    result = predict_images(
        ImagePredictor(model.to(dev), transform, proto, dev, self_supervised, tile_batch),
        images,
        Outputs(Path(out), fmt, names, palette, alpha),
    )
    failed = problems + result.failed
    summary = {
        "images": result.images,
        "files": len(result.written),
        "out": str(out),
        "failed": failed,
        "config": source,
    }
    if failed:
        raise UserError(
            f"{len(failed)} input(s) failed (listed above); {result.images} image(s) predicted into {out}", exit_code=1
        )
    return summary


def visualize_offsets(
    checkpoint: Path,
    image: Path,
    gt: Path | None = None,
    out: Path | None = None,
    run: Path | None = None,
    device: str = "auto",
    params_path: Path = Path("params.yaml"),
) -> Path:
    """AlignSeg's learned-offset figure for one image (and its ground truth), written as a PNG."""
    import numpy as np

    from segrepro.data.palette import colourise
    from segrepro.data.transforms import build_eval_transforms
    from segrepro.evaluation.offsets_figure import offsets_figure
    from segrepro.evaluation.predict_images import read_rgb

    cfg, _ = _run_recipe("alignseg", checkpoint, run, params_path)
    dataset_name = cfg.dataset

    def read(path: Path, what: str) -> np.ndarray:
        try:
            return read_rgb(path) if what == "image" else _read_label(path)
        except (OSError, ValueError) as err:
            raise UserError(
                f"{path}: cannot read the {what} ({type(err).__name__}); pass a PNG or JPEG", exit_code=2
            ) from None

    rgb = read(Path(image), "image")
    gt_rgb = None
    if gt is not None:
        label = read(Path(gt), "ground truth")
        if label.shape[:2] != rgb.shape[:2]:
            raise UserError(
                f"{gt}: {label.shape[1]}x{label.shape[0]} ground truth for a "
                f"{rgb.shape[1]}x{rgb.shape[0]} image; pass the image's own label PNG",
                exit_code=2,
            )
        label_ids = "labelIds" in Path(gt).name and "TrainIds" not in Path(gt).name
        gt_rgb = label if label.ndim == 3 else colourise(label, dataset_name, label_ids)
    model = load_eval_model("alignseg", checkpoint, cfg.variant, cfg.model_num_classes())
    path = Path(out or Path(image).with_name(Path(image).stem + "_offsets.png"))
    return offsets_figure(model, build_eval_transforms(cfg.norm()), rgb, path, _device(device), gt_rgb)


def _read_label(path: Path) -> Any:
    """A label PNG as class ids (HxW), or an already coloured GT as RGB (HxWx3)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P":
            return np.asarray(im)  # VOC-style palette PNG: the indices are the classes
        return np.asarray(im.convert("RGB")) if im.mode in ("RGB", "RGBA") else np.asarray(im.convert("L"))


def evaluate(
    trained: TrainedModel,
    data: Path | None = None,
    split: str = "val",
    protocol: str = "official",
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    crop: int | None = None,
    stride: int | None = None,
    save_pred: Path | None = None,
    pred_kind: str = "labelIds",
    overlays: int = 4,
    out: Path | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Run a protocol over a split, write metrics.json / per-class CSV / plots, log an MLflow eval run."""
    from segrepro.data import get_dataset
    from segrepro.data.manifest import sha256_file
    from segrepro.evaluation.inference import resolve_protocol
    from segrepro.evaluation.predict import run_evaluation
    from segrepro.evaluation.report import log_report, write_report
    from segrepro.tracking.mlflow_tracker import (
        MlflowTracker,
        dvc_data_hash,
        environment_tags,
        git_state,
        require_mlflow,
    )

    if track:
        require_mlflow("the evaluation's MLflow run", optional=True)
    method, checkpoint = trained.method, trained.checkpoint
    cfg, source = _announce(trained)
    proto = resolve_protocol(
        cfg.official_protocols(), protocol, split, scales=scales, flip=flip, crop=crop, stride=stride
    )
    root, model = trained.root(cfg, data), trained.build(cfg)
    dataset_name, variant = cfg.dataset, trained.variant or cfg.variant
    out = Path(out or Path("runs") / method / "eval")
    device = _device(trained.device)
    with _measure_cost(device) as cost:
        report = run_evaluation(
            cfg,
            model,
            root,
            split,
            proto,
            device,
            save_pred=save_pred,
            pred_kind=pred_kind,
            overlays=overlays,
            overlay_dir=out / "overlays",
            workers=trained.workers,
            tile_batch=trained.tile_batch,
        )
    images = len(get_dataset(dataset_name, root, split))
    info = {
        "method": method,
        "variant": str(variant),
        "split": split,
        "protocol": proto.describe(),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(Path(checkpoint)),
        "config": source,
        "images": images,
        "eval_img_per_s": images / cost["seconds"] if cost["seconds"] > 0 else None,
        "peak_mem_MB": cost["peak_mem_MB"],
        "device": str(device),
    }
    report.json_dict.setdefault("segrepro", {}).update(info)
    files = write_report(report, out)
    if method == "alignseg":  # the seed's learned-offset figure, on the split's first image
        files["offsets"] = _eval_offsets_figure(cfg, model, root, split, out / "offsets.png", device)
    summary: dict[str, Any] = {**info, **report.metrics, "out": str(out)}
    if track:
        tags = {
            "stage": "evaluate",
            "method": method,
            "dataset": dataset_name,
            "split": split,
            "protocol": proto.name,
            "variant": str(variant),
            **git_state(),
            **environment_tags(1),
        }
        parent = _train_run_id(method, Path(checkpoint))
        if parent:
            tags["parent_train_run_id"] = parent
        params = {
            "protocol": proto.name,
            "scales": list(proto.scales),
            "flip": proto.flip,
            "crop": proto.crop,
            "stride": proto.tile_stride,
            "checkpoint_sha256": info["checkpoint_sha256"],
            "split": split,
        }
        tracker = MlflowTracker(
            run_name=f"{method}-eval-{proto.name}", tags=tags, params=params, dataset=dataset_name, parent_run_id=parent
        )
        status = "FAILED"
        try:
            tracker.log_dataset(dataset_name, split, root, dvc_data_hash(root), "evaluation")
            log_report(tracker, report, files)
            tracker.log_metrics({k: float(info[k]) for k in ("eval_img_per_s", "peak_mem_MB") if info[k]}, step=0)
            tracker.log_images(sorted((out / "overlays").glob("*_overlay.png"))[:overlays], "overlays")
            status = "FINISHED"
        finally:
            tracker.end(status)
        summary["mlflow_run_id"] = tracker.run_id
    atomic_write_text(out / "eval_summary.json", json.dumps(summary, indent=2, default=str))
    return summary


def _train_run_id(method: str, checkpoint: Path) -> str | None:
    """The MLflow run that trained ``checkpoint``: ``mlflow_run_id`` of the run folder's train_summary.json."""
    for candidate in (Path(checkpoint).parent / "train_summary.json", Path("runs") / method / "train_summary.json"):
        if candidate.is_file():
            return str(json.loads(candidate.read_text()).get("mlflow_run_id") or "") or None
    return None


@contextlib.contextmanager
def _measure_cost(device: Any) -> Any:
    """Wall seconds and peak memory (MB) of the block: CUDA ``max_memory_allocated``, else this process's
    peak RSS (decode workers are other processes and do not count)."""
    import time

    import torch

    from segrepro.models.bench import _reset_peak_rss, _rss_kb

    cost: dict[str, Any] = {"seconds": 0.0, "peak_mem_MB": None}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()
    start = time.perf_counter()
    yield cost
    if cuda:
        torch.cuda.synchronize(device)
    cost["seconds"] = time.perf_counter() - start
    try:
        cost["peak_mem_MB"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else _rss_kb("VmHWM") / 1024
    except OSError:  # no /proc (not Linux): leave the figure empty rather than guess
        pass


def _eval_offsets_figure(cfg: Any, model: Any, root: Path, split: str, path: Path, device: Any) -> Path:
    from segrepro.data import get_dataset
    from segrepro.data.palette import colourise
    from segrepro.data.transforms import build_eval_transforms
    from segrepro.evaluation.offsets_figure import offsets_figure

    sample = get_dataset(cfg.dataset, root, split)[0]
    gt = colourise(sample["label"], cfg.dataset) if sample.get("label") is not None else None
    return offsets_figure(model, build_eval_transforms(cfg.norm()), sample["image"], path, device, gt)


def submit_predict(
    trained: TrainedModel, data: Path, out: Path, protocol: str = "official", split: str = "test"
) -> dict[str, Any]:
    """Predict every image of the Cityscapes split into ``out`` (one labelId PNG each, plus manifest.json).

    Resumable: PNGs are written atomically and a rerun skips those already there; a folder left by another
    checkpoint, protocol or split is refused.
    """
    from dataclasses import asdict

    from segrepro.data import get_dataset
    from segrepro.data.cityscapes import stem_of
    from segrepro.data.manifest import sha256_file
    from segrepro.data.transforms import build_eval_transforms
    from segrepro.evaluation.inference import resolve_protocol
    from segrepro.evaluation.predict import iter_predictions, save_prediction
    from segrepro.submission.build import open_prediction_dir, prediction_name
    from segrepro.tracking.mlflow_tracker import git_state

    method, checkpoint = trained.method, trained.checkpoint
    cfg, source = _announce(trained)
    proto = resolve_protocol(cfg.official_protocols(), protocol, split)
    dataset_name, variant = cfg.dataset, trained.variant or cfg.variant
    if dataset_name != "cityscapes":
        raise UserError(f"{method}: submissions are for the Cityscapes test server; its recipe uses {dataset_name}")
    manifest = {
        "method": method,
        "variant": str(variant),
        "checkpoint": Path(checkpoint).name,
        "checkpoint_sha256": sha256_file(Path(checkpoint)),
        "protocol": proto.describe(),
        "protocol_settings": asdict(proto),
        "split": split,
        "format": "labelIds, 8-bit PNG, full size",
        "git_sha": git_state()["git_sha"],
        "config": source,
        "train_mlflow_run_id": _train_run_id(method, Path(checkpoint)),
    }
    root, model = trained.root(cfg, data), trained.build(cfg)
    folder = open_prediction_dir(Path(out), manifest)
    dataset = get_dataset(dataset_name, root, split, transform=build_eval_transforms(cfg.norm(), *cfg.eval_sizes()))
    names = [prediction_name(stem_of(p)) for p in dataset.images]
    done = sum((folder / n).is_file() for n in names)
    for pred in iter_predictions(
        model,
        dataset,
        proto,
        _device(trained.device),
        desc="submission",
        skip=lambda i: (folder / names[i]).is_file(),
        workers=trained.workers,
        tile_batch=trained.tile_batch,
    ):
        save_prediction(pred.classes, folder / names[pred.sample["index"]], "labelIds")
    return {
        "predictions": str(folder),
        "count": len(names),
        "resumed": done,
        "protocol": proto.describe(),
        "config": source,
    }


def submit_package(
    pred_dir: Path, out: Path, data: Path | None = None, split: str = "test", track: bool = True
) -> dict[str, Any]:
    """Zip a prediction folder into a server archive (PNGs only) and write ``X.zip.manifest.json`` beside it.

    With ``data``, exactly one prediction per image of the split is required; without it, every
    ``*_leftImg8bit.png`` of the folder is packed. ``track`` logs a ``stage=submit`` MLflow run with the
    sha256 of the archive and of its manifest (one process: rank 0 by construction).
    """
    from segrepro.submission.build import PREDICTION_SUFFIX, prediction_name, write_archive
    from segrepro.submission.validate import split_images
    from segrepro.tracking.mlflow_tracker import require_mlflow

    if track:
        require_mlflow("the submission's MLflow run", optional=True)
    pred_dir, out = Path(pred_dir), Path(out)
    if not pred_dir.is_dir():
        raise UserError(f"{pred_dir}: prediction folder not found; write it with `segrepro submit predict`")
    if data is not None:
        names = [prediction_name(stem) for stem in split_images(Path(data), split)]
    else:
        names = [p.name for p in pred_dir.glob(f"*{PREDICTION_SUFFIX}")]
        if not names:
            raise UserError(f"{pred_dir}: no *{PREDICTION_SUFFIX} predictions to package")
    summary = write_archive(pred_dir, names, out)
    if track:
        from segrepro.tracking.mlflow_tracker import MlflowTracker, dvc_data_hash, git_state

        manifest = json.loads(Path(summary["manifest"]).read_text())
        tags = {
            "stage": "submit",
            "method": str(manifest.get("method", "unknown")),
            "split": split,
            "dataset": "cityscapes",
            **git_state(),
        }
        params = {k: summary[k] for k in ("archive_sha256", "manifest_sha256", "predictions")}
        params.update({k: manifest[k] for k in ("checkpoint_sha256", "protocol") if k in manifest})
        # nested under the training run, in the Cityscapes experiment (submissions are for its test server)
        tracker = MlflowTracker(
            run_name=f"{tags['method']}-submit",
            tags=tags,
            params=params,
            dataset="cityscapes",
            parent_run_id=manifest.get("train_mlflow_run_id"),
        )
        status = "FAILED"
        try:
            if data is not None:
                tracker.log_dataset("cityscapes", split, Path(data), dvc_data_hash(Path(data)), "submission")
            tracker.log_file(Path(summary["manifest"]), "submission")
            status = "FINISHED"
        finally:
            tracker.end(status)
        summary["mlflow_run_id"] = tracker.run_id
    return summary


def submit_build(
    trained: TrainedModel,
    data: Path,
    out: Path,
    protocol: str = "official",
    split: str = "test",
    track: bool = True,
) -> dict[str, Any]:
    """:func:`submit_predict` into ``X.zip.parts/``, then :func:`submit_package`; the staging folder goes."""
    import shutil

    from segrepro.submission.build import staging_dir
    from segrepro.tracking.mlflow_tracker import require_mlflow

    if track:  # before the predictions, not after them
        require_mlflow("the submission's MLflow run", optional=True)
    out = Path(out)
    predicted = submit_predict(trained, data, staging_dir(out), protocol, split)
    packaged = submit_package(staging_dir(out), out, data, split, track)
    shutil.rmtree(staging_dir(out))
    return {
        **packaged,
        "predictions": predicted["count"],
        "resumed": predicted["resumed"],
        "protocol": predicted["protocol"],
        "config": predicted["config"],
    }


def submit_validate(archive: Path, data: Path, split: str = "test", max_mb: float | None = None) -> dict[str, Any]:
    """Check an archive against the split under ``data``; raises SubmissionError listing every problem."""
    from segrepro.submission.validate import MAX_ARCHIVE_BYTES, validate_archive

    limit = int(max_mb * 2**20) if max_mb is not None else MAX_ARCHIVE_BYTES
    summary = validate_archive(Path(archive), Path(data), split, limit)
    return {"archive": str(archive), "predictions": summary.predictions, "bytes": summary.archive_bytes}
