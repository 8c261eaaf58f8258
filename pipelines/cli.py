"""``segrepro pipeline ...``: compile and submit the Kubeflow pipeline, and the helpers its steps run.

The group lives with the pipelines, not in ``segrepro.cli``: it reaches the ``segrepro`` command through the
``segrepro.commands`` entry point (pyproject.toml), so the core CLI never imports the Kubeflow layer, whose
components in turn read the core CLI's definition (segrepro_components.cli_args). Only typer is imported here;
kfp and the rest load when a command runs, after a check that names the extra to install.
"""

from __future__ import annotations

from pathlib import Path

import typer

from segrepro.errors import require_extra

app = typer.Typer(
    help="Kubeflow Pipelines: compile and submit cityscapes_benchmark; helpers its steps run.", no_args_is_help=True
)


def _require_kfp(command: str) -> None:
    require_extra("kubeflow", f"segrepro pipeline {command}", "kfp", "kfp.kubernetes")


@app.command("compile")
def pipeline_compile(
    out: Path = typer.Option(Path("pipeline.yaml"), "--out", help="Where to write the pipeline IR YAML."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml giving the default methods."),
    pvc: str = typer.Option("segrepro-data", "--pvc", help="PVC (ReadWriteMany for multi-node) holding data and runs."),
    mount_path: str = typer.Option("/mnt/segrepro", "--mount-path", help="Where every task mounts the PVC."),
    node_selector: list[str] = typer.Option([], "--node-selector", help="GPU node label KEY=VALUE (repeatable)."),
    toleration: list[str] = typer.Option(
        [], "--toleration", help="key=K,operator=Exists|Equal[,value=V],effect=E (repeatable)."
    ),
    accelerator: str = typer.Option(
        "nvidia.com/gpu", "--accelerator", help="Accelerator resource the GPU tasks request."
    ),
    train_cpu: str = typer.Option("16", "--train-cpu", help="CPU request of a training task."),
    train_memory: str = typer.Option("64G", "--train-memory", help="Memory request of a training task."),
    train_retries: int = typer.Option(2, "--train-retries", help="Retries of a failed training task (it resumes)."),
    mlflow_secret: str = typer.Option("segrepro-mlflow", "--mlflow-secret", help="Secret with MLFLOW_TRACKING_URI."),
    s3_secret: str = typer.Option("segrepro-s3", "--s3-secret", help="Optional secret with AWS_* keys for s3:// data."),
) -> None:
    """Write the cityscapes_benchmark pipeline (container components) as kfp IR YAML."""
    _require_kfp("compile")
    from segrepro_pipelines.cityscapes_benchmark import compile_pipeline
    from segrepro_pipelines.cluster import ClusterConfig, parse_pairs, parse_toleration

    cluster = ClusterConfig(
        pvc_name=pvc,
        mount_path=mount_path,
        accelerator=accelerator,
        train_cpu=train_cpu,
        train_memory=train_memory,
        train_retries=train_retries,
        node_selector=parse_pairs(node_selector, "--node-selector"),
        tolerations=[parse_toleration(t) for t in toleration],
        mlflow_secret=mlflow_secret,
        s3_secret=s3_secret,
    )
    typer.echo(f"pipeline written to {compile_pipeline(out, cluster, params)}")


@app.command("submit")
def pipeline_submit(
    host: str = typer.Option(..., "--host", help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888."),
    package: Path = typer.Option(Path("pipeline.yaml"), "--package", help="Compiled pipeline YAML."),
    gpus: int | None = typer.Option(None, "--gpus", help="GPUs per training task (torchrun processes per node)."),
    num_nodes: int | None = typer.Option(None, "--num-nodes", help=">1 trains through a Kubeflow Trainer TrainJob."),
    image: str | None = typer.Option(None, "--image", help="segrepro image every task runs."),
    data_root: str | None = typer.Option(
        None,
        "--data-root",
        help="Folder (PVC path or s3:// URI) holding one root per dataset: <data-root>/cityscapes, .../ade20k, ...",
    ),
    experiment: str = typer.Option("segrepro", "--experiment", help="KFP experiment name."),
    namespace: str | None = typer.Option(None, "--namespace", help="Kubeflow profile namespace (multi-user installs)."),
) -> None:
    """Start a run of the compiled pipeline (its benchmark rows are fixed at compile time) on a KFP endpoint."""
    _require_kfp("submit")
    from segrepro_pipelines.submit import submit_run

    arguments = {"gpus": gpus, "num_nodes": num_nodes, "image": image, "data_root": data_root}
    typer.echo(f"run {submit_run(host, package, arguments, experiment, namespace)} started on {host}")


@app.command("fetch")
def pipeline_fetch(
    source: str = typer.Argument(..., help="Dataset root: a folder (e.g. on the PVC) or s3://bucket/prefix."),
    dst: Path = typer.Argument(..., help="Folder to copy it to (replaced as a whole)."),
) -> None:
    """Copy a raw dataset into a task's artifact (the prepare step's first half)."""
    if source.startswith("s3://"):
        require_extra("kubeflow", "segrepro pipeline fetch from s3://", "boto3")
    from segrepro_pipelines.data import fetch_data

    typer.echo(f"{source} copied to {fetch_data(source, dst)}")
