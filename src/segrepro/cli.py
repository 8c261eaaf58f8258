"""The ``segrepro`` command line. Each command is a thin call into a stage function of its layer.

The same stage names are used by the DVC stages (dvc.yaml) and the Kubeflow components.
User errors (:class:`segrepro.errors.UserError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from segrepro.errors import UserError

app = typer.Typer(
    name="segrepro",
    help="Reproduce, evaluate and compare semantic-segmentation methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Synthetic datasets and dataset preparation.", no_args_is_help=True)
checkpoint_app = typer.Typer(help="Official checkpoint conversion.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks whose figures go to docs/benchmarks.md.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(bench_app, name="bench")


# --- data ---------------------------------------------------------------------------------------


@data_app.command("synth")
def data_synth(
    dataset: str = typer.Argument(..., help="Dataset name (cityscapes, voc, coco_stuff27, pascal_context, ade20k)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the synthetic dataset into (official layout)."),
    split_sizes: str | None = typer.Option(
        None,
        "--split-sizes",
        help="Images per split in the dataset's split order, e.g. 8,4,4 (Cityscapes: a 4th "
        "count adds coarse train_extra images).",
    ),
    size: str | None = typer.Option(None, "--size", help="Image size HxW, e.g. 256x512."),
    seed: int = typer.Option(0, "--seed", help="Same seed gives byte-identical files."),
    profile: str = typer.Option(
        "default",
        "--profile",
        help="default (small, all-or-nothing) or full (Cityscapes: "
        "the real split sizes, cities and 1024x2048, parallel and resumable).",
    ),
    fraction: float = typer.Option(1.0, "--fraction", help="--profile full: each city's official count times F."),
    workers: int | None = typer.Option(None, "--workers", help="--profile full: processes (default: all cores)."),
) -> None:
    """Write a deterministic synthetic stand-in with the dataset's exact layout, names and encodings."""
    from segrepro.data import parse_size, synth_dataset

    if profile == "full":
        if dataset != "cityscapes" or split_sizes is not None:
            raise UserError("--profile full: only for cityscapes, and it takes --fraction instead of --split-sizes")
        from segrepro.data.cityscapes_full import synth_full

        res = synth_full(out, fraction, parse_size(size or "1024x2048"), seed, workers)
        typer.echo(
            f"synthetic cityscapes (full profile, fraction {fraction}) written to {res['root']}: "
            f"{res['images']} images ({res['skipped']} already complete), {res['bytes'] / 2**20:.0f} MiB "
            f"in {res['seconds']:.1f} s with {res['workers']} processes"
        )
        return
    if profile != "default":
        raise UserError(f"--profile {profile!r}: choose default or full")
    if fraction != 1.0:
        raise UserError("--fraction needs --profile full")
    typer.echo(f"synthetic {dataset} written to {synth_dataset(dataset, out, split_sizes, size, seed)}")


@data_app.command("prepare")
def data_prepare(
    dataset: str = typer.Argument(..., help="Dataset name (cityscapes, voc, coco_stuff27, pascal_context, ade20k)."),
    root: Path = typer.Option(..., "--root", help="Dataset root in the official layout."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: <root>_prepared beside the root)."),
) -> None:
    """Validate the layout (exit 2 with one line per problem, nothing written), then write prepared outputs."""
    from segrepro.data import prepare_dataset

    typer.echo(f"prepared {dataset} written to {prepare_dataset(dataset, root, out)}")


# --- models / checkpoint ------------------------------------------------------------------------


@checkpoint_app.command("import")
def checkpoint_import(
    src: Path = typer.Argument(
        ..., help="Official released checkpoint, or an ImageNet/DINO backbone file with --backbone."
    ),
    dst: Path = typer.Argument(..., help="Where to write the plain state_dict (only when it fits strictly)."),
    method: str = typer.Option(..., "--method", help="Method name (segrepro.models.list_methods())."),
    variant: str | None = typer.Option(None, "--variant", help="Variant; the method's default when omitted."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classes of the checkpoint (variant default)."),
    backbone: str | None = typer.Option(
        None, "--backbone", help="SRC is a backbone file of this source: mit, gald-deep, eca, dino."
    ),
) -> None:
    """Strip module./net. wrappers, convert, verify strictly against the model and write DST."""
    from segrepro.models.checkpoint import import_checkpoint

    res = import_checkpoint(method, src, dst, variant=variant, num_classes=num_classes, backbone=backbone)
    kind = "backbone tensors" if res.backbone_only else "tensors"
    typer.echo(f"{res.method}/{res.variant}: {res.num_tensors} {kind} verified, written to {res.dst}")


@checkpoint_app.command("export")
def checkpoint_export(
    src: Path = typer.Argument(..., help="A plain state_dict written by 'checkpoint import' or training."),
    dst: Path = typer.Argument(..., help="Where to write the official-style file."),
    prefix: str = typer.Option("module.", "--prefix", help="Key prefix the official loader expects ('' for none)."),
    container: str = typer.Option("state_dict", "--container", help="Wrap in {CONTAINER: ...}; '' for a bare dict."),
) -> None:
    """Write our state_dict with the official wrappers (names are already the official ones)."""
    from segrepro.models.checkpoint import export_checkpoint

    n = export_checkpoint(src, dst, prefix=prefix, container=container or None)
    typer.echo(f"{n} tensors written to {dst}")


# --- metrics ------------------------------------------------------------------------------------

metrics_app = typer.Typer(
    help="Metrics on folders of prediction PNGs (the official evaluators' numbers).", no_args_is_help=True
)
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("cityscapes")
def metrics_cityscapes(
    gt_root: Path = typer.Option(
        ..., "--gt-root", help="Folder holding gtFine/<split>/<city>/*_gtFine_{labelIds,instanceIds}.png."
    ),
    pred_root: Path = typer.Option(
        ..., "--pred-root", help="labelId PNGs named <city>_<seq>_<frame>*.png, anywhere below."
    ),
    split: str = typer.Option("val", "--split", help="gtFine split to evaluate."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the official JSON fields (+ 'segrepro' extras) here."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Decode processes (default: all cores; 0: in this process)."
    ),
) -> None:
    """IoU/iIoU per class and category, equal to cityscapesscripts' evalPixelLevelSemanticLabeling."""
    from segrepro.evaluation.cityscapes_metrics import evaluate_cityscapes_folders, write_result_json

    result = evaluate_cityscapes_folders(gt_root, pred_root, split, workers=workers)
    typer.echo(result.table())
    if json_out is not None:
        write_result_json(result, json_out)
        typer.echo(f"written {json_out}")


# --- train ------------------------------------------------------------------------------------
@app.command("models")
def models_cmd() -> None:
    """List the registered methods and variants (the names `train`, `evaluate` and `build()` accept)."""
    from segrepro.models.registry import get_spec, list_methods, list_variants

    for method in list_methods():
        default = get_spec(method).variant
        for variant in list_variants(method):
            spec = get_spec(method, variant)
            mark = " (default)" if variant == default else ""
            typer.echo(
                f"{method:<13} {variant:<10} {spec.default_num_classes:>3} classes  "
                f"pretrained: {spec.pretrained_source:<9} {spec.description}{mark}"
            )


@app.command("recipes")
def recipes_cmd(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="One JSON object per recipe (method, recipe, dataset, split, "
        "protocol, paper_mIoU, paper_split, source, ...).",
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
) -> None:
    """List every (method, recipe): dataset, split, protocol, paper number and its source, CPU twin."""
    import json

    from segrepro.engine.config import load_params
    from segrepro.tracking.recipe_table import format_rows, recipe_rows

    rows = recipe_rows(load_params(params))
    typer.echo(json.dumps(rows, indent=1, ensure_ascii=False) if as_json else format_rows(rows))


@app.command("train")
def train_cmd(
    method: str = typer.Option(..., "--method", help="Method name, e.g. ann (see `segrepro models`)."),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Named recipe in params.yaml (default: train.<method>.recipe)."
    ),
    data: Path | None = typer.Option(None, "--data", help="Dataset root (default: params.yaml data.<dataset>)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder for checkpoints (default: runs/<method>)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the latest valid checkpoint."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a params.yaml value: --set train.ann.optimizer.lr=0.005"
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Weights a multi-stage recipe (init_from) starts from (default: <method>-<recipe>/model.pt beside --out).",
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="DDP processes on this machine (torchrun --standalone; on CPU each gets cores/nproc threads).",
    ),
) -> None:
    """Train one method (under torchrun or with --nproc: DDP across processes, same global batch)."""
    from segrepro import stages

    if nproc > 1:
        if "WORLD_SIZE" in os.environ:
            raise UserError("--nproc: this process already runs under torchrun; drop --nproc", exit_code=2)
        stages.check_train(method, recipe, data, out, set_, params, init, world_size=nproc)  # once, before any process
        argv = ["train", "--method", method, "--resume" if resume else "--no-resume", "--params", str(params)]
        for flag, value in (("--recipe", recipe), ("--data", data), ("--out", out), ("--init", init)):
            argv += [flag, str(value)] if value is not None else []
        for item in set_:
            argv += ["--set", item]
        from segrepro.engine.distributed import launch_local

        raise typer.Exit(launch_local(nproc, argv))
    summary = stages.train(method, recipe, data, out, resume, set_, params, init)
    if "val_mIoU" in summary:
        typer.echo(f"{method}: val mIoU {summary['val_mIoU']:.4f} ({summary['checkpoint']})")


# --- evaluate / submit --------------------------------------------------------------------------

RECIPE_HELP = "Recipe in params.yaml, only for a checkpoint without a run config (e.g. from `checkpoint import`)."
STRICT_HELP = "Fail (exit 2) instead of warning when today's params.yaml differs from the run's config."


def _floats(value: str | None) -> list[float] | None:
    if not value:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--scales {value!r}: give comma-separated numbers, e.g. 0.75,1,1.25") from None


@app.command("evaluate")
def evaluate_cmd(
    method: str = typer.Option(..., "--method", help="Method name, e.g. ann."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Plain state_dict, e.g. runs/<method>/model.pt."),
    data: Path | None = typer.Option(None, "--data", help="Dataset root (default: params.yaml data.<dataset>)."),
    split: str = typer.Option("val", "--split", help="Split to evaluate (needs labels)."),
    protocol: str = typer.Option(
        "official", "--protocol", help="official (the method's own), ss (whole image), ms-flip (0.5-1.75 + flip)."
    ),
    scales: str | None = typer.Option(None, "--scales", help="Override the scales, e.g. 0.75,1,1.25."),
    flip: bool | None = typer.Option(None, "--flip/--no-flip", help="Override horizontal-flip averaging."),
    crop: int | None = typer.Option(None, "--crop", help="Override the sliding tile size (0: whole image)."),
    stride: int | None = typer.Option(None, "--stride", help="Override the tile stride (default: 1/3 overlap)."),
    save_pred: Path | None = typer.Option(None, "--save-pred", help="Write every prediction PNG under this folder."),
    pred_kind: str = typer.Option(
        "labelIds", "--pred-kind", help="Saved PNG values: labelIds (Cityscapes) or trainIds."
    ),
    overlays: int = typer.Option(4, "--overlays", help="Colour overlays for the first N images (in OUT/overlays)."),
    variant: str | None = typer.Option(None, "--variant", help="Model variant (default: the recipe's)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: runs/<method>/eval)."),
    recipe: str | None = typer.Option(None, "--recipe", help=RECIPE_HELP),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, "--workers", help="Image decode worker processes."),
    tile_batch: int = typer.Option(4, "--tile-batch", help="Sliding-window tiles per forward pass."),
    mlflow: bool = typer.Option(
        True, "--mlflow/--no-mlflow", help="Log an MLflow eval run linked to the training run."
    ),
    strict_config: bool = typer.Option(False, "--strict-config", help=STRICT_HELP),
) -> None:
    """Run an inference protocol over a split; metrics.json, per-class CSV, plots and an MLflow eval run.

    Model, transforms and protocol come from the run's own config (config.yaml beside the checkpoint)."""
    from segrepro import stages

    trained = stages.TrainedModel(
        method, checkpoint, variant, recipe, (), params, device, workers, tile_batch, strict_config
    )
    summary = stages.evaluate(
        trained, data, split, protocol, _floats(scales), flip, crop, stride, save_pred, pred_kind, overlays, out, mlflow
    )
    headline = ", ".join(f"{k} {summary[k]:.4f}" for k in summary if "mIoU" in k or k == "iIoU")
    typer.echo(f"{method} [{summary['protocol']}]: {headline} (written to {summary['out']})")


@app.command("predict")
def predict_cmd(
    inputs: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or glob patterns."),
    method: str = typer.Option(..., "--method", help="Method name, e.g. ann."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Plain state_dict, e.g. runs/<method>/model.pt."),
    run: Path | None = typer.Option(
        None, "--run", help="Run folder holding the config.yaml training wrote (default: the checkpoint's folder)."
    ),
    out: Path = typer.Option(Path("predictions"), "--out", help="Output folder; folder inputs keep their subfolders."),
    protocol: str = typer.Option("official", "--protocol", help="official (the method's own), ss or ms-flip."),
    formats: str | None = typer.Option(
        None,
        "--format",
        help="Comma-separated: overlay,labelIds,trainIds,color (default: overlay + the dataset's label PNG).",
    ),
    alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity of the class colours (0..1)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    tile_batch: int = typer.Option(4, "--tile-batch", help="Sliding-window tiles per forward pass."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Read only for a checkpoint without a config."),
) -> None:
    """Segment your own images: colour overlay with a legend and label PNGs, each at the input's size."""
    from segrepro import stages

    summary = stages.predict(method, checkpoint, inputs, run, out, protocol, formats, alpha, device, tile_batch, params)
    typer.echo(f"{summary['images']} image(s) predicted, {summary['files']} file(s) written to {summary['out']}")


visualize_app = typer.Typer(help="The seeds' figures, drawn from a trained model's own forward.", no_args_is_help=True)
app.add_typer(visualize_app, name="visualize")


@visualize_app.command("offsets")
def visualize_offsets_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="An AlignSeg state_dict, e.g. runs/alignseg/model.pt."),
    image: Path = typer.Option(..., "--image", help="Image to run (any size; predicted whole)."),
    gt: Path | None = typer.Option(None, "--gt", help="Its label PNG (trainIds, *_labelIds, palette, colour)."),
    out: Path | None = typer.Option(None, "--out", help="PNG to write (default: <image>_offsets.png beside it)."),
    run: Path | None = typer.Option(None, "--run", help="Run folder with config.yaml (default: the checkpoint's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Read only for a checkpoint without a config."),
) -> None:
    """AlignSeg's learned offsets: Δ^A and Δ^F of the four AlignFA modules, flow-coloured, with a colour wheel."""
    from segrepro import stages

    typer.echo(f"offsets figure written to {stages.visualize_offsets(checkpoint, image, gt, out, run, device, params)}")


submit_app = typer.Typer(help="Cityscapes test-server archives: build and validate.", no_args_is_help=True)
app.add_typer(submit_app, name="submit")


def _submit_model(
    method: str,
    checkpoint: Path,
    variant: str | None,
    recipe: str | None,
    params: Path,
    device: str,
    workers: int,
    tile_batch: int,
    strict_config: bool,
):
    from segrepro import stages

    return stages.TrainedModel(
        method, checkpoint, variant, recipe, (), params, device, workers, tile_batch, strict_config
    )


@submit_app.command("predict")
def submit_predict_cmd(
    method: str = typer.Option(..., "--method", help="Method name, e.g. ann."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Plain state_dict, e.g. runs/<method>/model.pt."),
    data: Path = typer.Option(..., "--data", help="Cityscapes root holding leftImg8bit/<split>."),
    out: Path = typer.Option(..., "--out", help="Folder for the prediction PNGs (plus their manifest.json)."),
    protocol: str = typer.Option("official", "--protocol", help="official, ss or ms-flip."),
    split: str = typer.Option("test", "--split", help="Split to predict (test for the server)."),
    variant: str | None = typer.Option(None, "--variant", help="Model variant (default: the recipe's)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, "--workers", help="Image decode worker processes."),
    tile_batch: int = typer.Option(4, "--tile-batch", help="Sliding-window tiles per forward pass."),
    recipe: str | None = typer.Option(None, "--recipe", help=RECIPE_HELP),
    strict_config: bool = typer.Option(False, "--strict-config", help=STRICT_HELP),
) -> None:
    """One 8-bit labelId PNG per image into a folder (e.g. on a GPU node); resumes after a crash.

    Model, transforms and protocol come from the run's own config (config.yaml beside the checkpoint)."""
    from segrepro import stages

    trained = _submit_model(method, checkpoint, variant, recipe, params, device, workers, tile_batch, strict_config)
    res = stages.submit_predict(trained, data, out, protocol, split)
    typer.echo(f"{res['count']} predictions ({res['resumed']} resumed) in {res['predictions']}")


@submit_app.command("package")
def submit_package_cmd(
    pred: Path = typer.Option(..., "--pred", help="Prediction folder written by `submit predict`."),
    out: Path = typer.Option(..., "--out", help="Archive to write, e.g. sub.zip (+ sub.zip.manifest.json)."),
    data: Path | None = typer.Option(None, "--data", help="Cityscapes root: require one PNG per image of --split."),
    split: str = typer.Option("test", "--split", help="Split the archive must cover (with --data)."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the archive and manifest sha256 to MLflow."),
) -> None:
    """Zip only the prediction PNGs; the manifest goes beside the archive, never inside."""
    from segrepro import stages

    res = stages.submit_package(pred, out, data, split, mlflow)
    typer.echo(
        f"{res['predictions']} predictions zipped to {res['archive']} (sha256 {res['archive_sha256']}); "
        f"manifest {res['manifest']}"
    )


@submit_app.command("build")
def submit_build_cmd(
    method: str = typer.Option(..., "--method", help="Method name, e.g. ann."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Plain state_dict, e.g. runs/<method>/model.pt."),
    data: Path = typer.Option(..., "--data", help="Cityscapes root holding leftImg8bit/<split>."),
    out: Path = typer.Option(..., "--out", help="Archive to write, e.g. submission.zip (staging in OUT.parts/)."),
    protocol: str = typer.Option("official", "--protocol", help="official, ss or ms-flip."),
    split: str = typer.Option("test", "--split", help="Split to predict (test for the server)."),
    variant: str | None = typer.Option(None, "--variant", help="Model variant (default: the recipe's)."),
    recipe: str | None = typer.Option(None, "--recipe", help=RECIPE_HELP),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, "--workers", help="Image decode worker processes."),
    tile_batch: int = typer.Option(4, "--tile-batch", help="Sliding-window tiles per forward pass."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the archive and manifest sha256 to MLflow."),
    strict_config: bool = typer.Option(False, "--strict-config", help=STRICT_HELP),
) -> None:
    """`submit predict` into OUT.parts/, then `submit package`: PNGs only in OUT, OUT.manifest.json beside it.

    Model, transforms and protocol come from the run's own config (config.yaml beside the checkpoint)."""
    from segrepro import stages

    trained = _submit_model(method, checkpoint, variant, recipe, params, device, workers, tile_batch, strict_config)
    summary = stages.submit_build(trained, data, out, protocol, split, mlflow)
    typer.echo(f"{summary['predictions']} predictions ({summary['resumed']} resumed) zipped to {summary['archive']}")


@submit_app.command("validate")
def submit_validate_cmd(
    archive: Path = typer.Argument(..., help="The .zip to check."),
    data: Path = typer.Option(..., "--data", help="Cityscapes root holding leftImg8bit/<split>."),
    split: str = typer.Option("test", "--split", help="Split the archive must cover."),
    max_mb: float | None = typer.Option(None, "--max-mb", help="Archive size limit in MiB (default 500)."),
) -> None:
    """Check names, count, size, mode, labelIds and archive safety; every problem listed, exit 2 if any."""
    from segrepro import stages

    summary = stages.submit_validate(archive, data, split, max_mb)
    typer.echo(f"{archive}: valid, {summary['predictions']} predictions, {summary['bytes']} bytes")


# --- bench --------------------------------------------------------------------------------------
# (one subcommand per layer: data, models, train, eval)


@bench_app.command("train")
def bench_train_cmd(
    method: str = typer.Option(..., "--method", help="Method to time."),
    recipe: str | None = typer.Option(None, "--recipe", help="Recipe (default: demo on CPU, official on CUDA)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    iterations: int = typer.Option(5, "--iterations", help="Timed optimiser steps (after 2 warm-up steps)."),
    batch: int | None = typer.Option(None, "--batch", help="Per-device batch (default: the recipe's)."),
    crop: int | None = typer.Option(None, "--crop", help="Square crop (default: the recipe's)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
) -> None:
    """Seconds per training iteration, images/s and peak memory at the recipe's crop and per-GPU batch."""
    import json

    from segrepro.engine.bench import bench_train
    from segrepro.stages import resolved_config

    _, cfg = resolved_config(method, recipe or ("official" if device == "cuda" else "demo"), (), params)
    typer.echo(json.dumps(bench_train(cfg, device, iterations, batch=batch, crop=crop), indent=2, default=str))


@bench_app.command("data")
def bench_data_cmd(
    size: str = typer.Option("1024x2048", "--size", help="Synthetic Cityscapes image size HxW."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes."),
    images: int = typer.Option(16, "--images", help="Images in the timed pass (one untimed warm-up pass first)."),
    method: str = typer.Option("alignseg", "--method", help="Whose training transforms to apply."),
) -> None:
    """Training-loader throughput (decode + augmentation, images/s) on a synthetic Cityscapes in a temp dir."""
    from segrepro.data import parse_size
    from segrepro.data.bench import bench_data
    from segrepro.data.transforms import NORMALIZATIONS, build_train_transforms
    from segrepro.models import get_card

    card = get_card(method)
    transform = build_train_transforms(card.train, NORMALIZATIONS[card.normalization])
    typer.echo(bench_data(transform, method, parse_size(size), workers, images).line())


@bench_app.command("eval")
def bench_eval_cmd(
    images: int = typer.Option(20, "--images", help="Synthetic GT/prediction pairs to generate."),
    size: str = typer.Option("1024x2048", "--size", help="Image size HxW (Cityscapes: 1024x2048)."),
    repeats: int = typer.Option(3, "--repeats", help="Timed runs per figure (the median is reported)."),
    workers: int = typer.Option(2, "--workers", help="Decode processes for the folder evaluation."),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Where to write the PNGs (default: a temp dir)."),
    part: str = typer.Option("metrics", "--part", help="metrics, inference (img/s per protocol) or all."),
    device: str = typer.Option("cpu", "--device", help="Inference: cpu (tiny variants) or cuda (official variants)."),
    infer_size: str | None = typer.Option(
        None, "--infer-size", help="Inference image HxW (default: 256x512 on CPU, 1024x2048 on CUDA)."
    ),
    methods: str = typer.Option(
        "alignseg,acfnet,gald,dgcnet,ann", "--methods", help="Inference: comma-separated methods."
    ),
    pairs_from: Path | None = typer.Option(
        None,
        "--pairs-from",
        help="Metrics end to end, side by side in fresh "
        "processes: --images val pairs replicated from this root's gtFine/val.",
    ),
) -> None:
    """Cityscapes metric speed vs cityscapesscripts (values checked equal); inference img/s per protocol."""
    import tempfile

    from segrepro.evaluation.bench import bench_eval, bench_inference, markdown, markdown_inference

    if part not in ("metrics", "inference", "all"):
        raise UserError(f"--part {part!r}: choose metrics, inference or all")
    if pairs_from is not None:
        from segrepro.evaluation.bench import bench_eval_folder, markdown_folder, replicate_val_pairs

        with tempfile.TemporaryDirectory() as tmp:
            base = work_dir or Path(tmp)
            gt_root, pred_root = replicate_val_pairs(pairs_from, base / "pairs", images)
            typer.echo(markdown_folder(bench_eval_folder(gt_root, pred_root, base, workers or None)))
        return
    if part in ("metrics", "all"):
        height, width = (int(v) for v in size.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            figures = bench_eval(work_dir or Path(tmp), images, height, width, repeats, workers)
        typer.echo(markdown(figures))
    if part in ("inference", "all"):
        cuda = device.startswith("cuda")
        ih, iw = (int(v) for v in (infer_size or ("1024x2048" if cuda else "256x512")).lower().split("x"))
        rows = bench_inference(
            [m.strip() for m in methods.split(",") if m.strip()],
            "r101" if cuda else "tiny",
            device,
            ih,
            iw,
            repeats=repeats,
        )
        typer.echo(markdown_inference(rows))


@bench_app.command("scale")
def bench_scale_cmd(
    fraction: float = typer.Option(0.0625, "--fraction", help="Stand-in size: each city's official count times F."),
    work_dir: Path = typer.Option(..., "--work-dir", help="Empty or new folder for the stand-in (deleted at the end)."),
    size: str = typer.Option("1024x2048", "--size", help="Image size HxW (smaller only for quick checks)."),
    stages_: str = typer.Option(
        "synth,prepare,dvc,s3,metrics,submit,loader,mlflow",
        "--stages",
        help="Comma-separated stages to run (synth and prepare are needed by the others).",
    ),
    metrics_images: int = typer.Option(500, "--metrics-images", help="Val pairs replicated for the metrics stage."),
    loader_images: int = typer.Option(8, "--loader-images", help="Timed images per loader configuration."),
    dvc_jobs: int = typer.Option(8, "--dvc-jobs", help="DVC remote `jobs` for push/pull."),
    s3_env: Path | None = typer.Option(None, "--s3-env", help="s3.env from scripts/s3-server-up.sh (push/pull)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the rows as JSON here."),
    keep: bool = typer.Option(False, "--keep", help="Keep the work folder (default: delete it)."),
) -> None:
    """Each CPU-side stage at a fraction of the real Cityscapes size: seconds, peak RSS, stage figures (Markdown)."""
    import json

    from segrepro.bench_scale import bench_scale, markdown
    from segrepro.io import atomic_write_text

    report = bench_scale(
        work_dir,
        fraction,
        size,
        [s.strip() for s in stages_.split(",") if s.strip()],
        metrics_images,
        loader_images,
        (0, 1, 2),
        dvc_jobs,
        s3_env,
        keep,
    )
    typer.echo(markdown(report))
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")


@bench_app.command("models")
def bench_models_cmd(
    methods: str | None = typer.Option(None, "--methods", help="Comma-separated methods (default: all)."),
    variants: str | None = typer.Option(
        None, "--variants", help="Comma-separated variants, e.g. tiny,r101 (default: all)."
    ),
    device: str = typer.Option(
        "cpu", "--device", help="cpu: latency + peak RSS at 512x1024; cuda: fp32/bf16 img/s at 1024x2048."
    ),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="Count FLOPs at 1024x2048 on meta tensors."),
    latency: bool = typer.Option(
        True, "--latency/--no-latency", help="Run the timed forwards (off: parameters and FLOPs only)."
    ),
    repeats: int = typer.Option(3, "--repeats", help="Timed forwards per model after one warm-up (median reported)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the rows and the machine as JSON here."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (for docs/benchmarks.md)."),
    peer: str | None = typer.Option(
        None,
        "--peer",
        help="Side by side with a peer code base instead: mmseg "
        "(its ANN R101-D8 against ours, eval forward at 512x1024, 2 threads).",
    ),
    peer_python: Path | None = typer.Option(None, "--peer-python", help="Python of the venv holding the peer."),
) -> None:
    """Parameters, FLOPs, CPU latency (and ms per GMAC)/peak memory and CUDA throughput per method and variant,
    all of the eval forward's main output; or, with --peer, ANN against the peer's, per GMAC."""
    from segrepro.io import atomic_write_text
    from segrepro.machine import describe
    from segrepro.models.bench import bench_models, bench_peer, format_peer, format_table, to_json

    def split(value: str | None) -> list[str] | None:
        return [v.strip() for v in value.split(",") if v.strip()] if value else None

    if peer is not None:
        import json

        report = bench_peer(peer, peer_python, repeats, 2)
        typer.echo(format_peer(report, markdown))
        if json_out is not None:
            atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")
        return
    rows = bench_models(split(methods), split(variants), device, flops, latency, repeats)
    typer.echo(f"machine: {describe()}")
    typer.echo(format_table(rows, markdown))
    if json_out is not None:
        atomic_write_text(json_out, to_json(rows))


@bench_app.command("blocks")
def bench_blocks_cmd(
    json_out: Path | None = typer.Option(None, "--json", help="Also write rows, ratios, machine and load here."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    blocks: str = typer.Option("apnb,nonlocal,afnb,nonlocal_fusion", "--blocks", help="Comma-separated blocks."),
    sizes: str = typer.Option("96x96,128x128,128x256", "--sizes", help="Feature sizes HxW (the seed's by default)."),
    channels: str = typer.Option("2048,1024,256,256", "--channels", help="in, AFNB low, key, value channels (ANN's)."),
    repeats: int = typer.Option(3, "--repeats", help="Timed forwards per row after one warm-up (median reported)."),
    part: str = typer.Option("attention", "--part", help="attention (the attention alone) or full (+ fuse conv)."),
) -> None:
    """ANN's efficiency study: APNB and AFNB against non-local blocks of the same channel sizes."""
    from segrepro.data import parse_size
    from segrepro.io import atomic_write_text
    from segrepro.machine import describe
    from segrepro.models.bench_blocks import Channels, bench_blocks, markdown, to_json

    try:
        ch = Channels(*(int(v) for v in channels.split(",")))
    except (TypeError, ValueError):
        raise UserError(f"--channels {channels!r}: give four integers, e.g. 2048,1024,256,256", exit_code=2) from None
    shapes = [parse_size(v.strip()) for v in sizes.split(",") if v.strip()]
    rows = bench_blocks([b.strip() for b in blocks.split(",") if b.strip()], shapes, device, ch, repeats, part=part)
    typer.echo(f"machine: {describe()}")
    typer.echo(markdown(rows))
    if json_out is not None:
        atomic_write_text(json_out, to_json(rows, ch))


# --- pipeline: synth, leaderboard, ui -----------------------------------------------------------


@app.command("synth")
def synth_cmd(
    dataset: str = typer.Argument(..., help="A dataset listed under synth: in params.yaml (cityscapes, voc)."),
    out: Path | None = typer.Option(None, "--out", help="Dataset root (default: params.yaml data.<dataset>)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
) -> None:
    """The embedded default dataset (DVC stage synth@<dataset>): synthetic data as params.yaml says, prepared."""
    from segrepro import stages

    res = stages.synth(dataset, out, params)
    typer.echo(f"synthetic {dataset} at {res['root']}, prepared at {res['prepared']}")


@app.command("leaderboard")
def leaderboard_cmd(
    runs: Path = typer.Option(Path("runs"), "--runs", help="Folder holding runs/<method>/ (train + eval outputs)."),
    out: Path = typer.Option(
        Path("leaderboard"), "--out", help="Where to write leaderboard.{md,csv,html} and metrics.json."
    ),
    methods: str | None = typer.Option(
        None, "--methods", help="Comma-separated methods (default: params.yaml methods)."
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file."),
    mlflow: bool = typer.Option(
        True, "--mlflow/--no-mlflow", help="Log a stage=leaderboard run and register the models."
    ),
) -> None:
    """Compare the methods: reproduced vs paper mIoU, per-class IoU, cost; Markdown, CSV, HTML, DVC metrics."""
    from segrepro import stages

    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    res = stages.leaderboard(runs, out, params, names, mlflow)
    typer.echo(Path(res["files"]["md"]).read_text())
    typer.echo(f"{res['rows']} row(s) written to {out}")


@app.command("ui")
def ui_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(5000, "--port", help="TCP port."),
    backend_store_uri: str | None = typer.Option(
        None, "--backend-store-uri", help="Default: sqlite:///<cwd>/mlflow.db; e.g. postgresql://..."
    ),
    artifacts_destination: str | None = typer.Option(
        None, "--artifacts-destination", help="Default: ./mlartifacts; or s3://bucket/prefix."
    ),
) -> None:
    """Start the project's MLflow server (tracking, served artifacts, model registry) and print its URL."""
    from segrepro.tracking.server import serve

    raise typer.Exit(serve(host, port, backend_store_uri, artifacts_destination))


# --- command groups of the optional layers (entry points) ----------------------------------------
# ``segrepro pipeline`` lives with the Kubeflow layer (pipelines/cli.py, installed as segrepro_pipelines) and
# registers itself through the ``segrepro.commands`` entry-point group: the core CLI never imports it.
COMMANDS_GROUP = "segrepro.commands"


def _add_entry_point_groups() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=COMMANDS_GROUP):
        app.add_typer(entry.load(), name=entry.name)


_add_entry_point_groups()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user errors into one clean line."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("segrepro").setLevel(logging.INFO)
    try:
        app(args=argv, prog_name="segrepro")
    except UserError as err:
        if not err.same_on_every_rank or os.environ.get("RANK", "0") == "0":
            typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
