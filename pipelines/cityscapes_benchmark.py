"""The ``cityscapes_benchmark`` pipeline: the params.yaml ``benchmark:`` rows, each on its own dataset (one
prepare per dataset), train → evaluate (→ submit for the ``submit:`` rows), then one leaderboard.

A multi-stage row (its recipe's ``init_from``) trains after the row it starts from and takes that row's Model
artifact as ``init``, as ``dvc repro`` chains them. The graph is unrolled at compile time from the rows.

One graph definition, :func:`build_graph`, takes the stage components as an argument: the
container build (:func:`container_pipeline`, compiled for clusters) and the local build
(:func:`local_pipeline`, run by ``kfp.local.SubprocessRunner`` in the tests) are the same graph.
"""

from pathlib import Path
from typing import Any, Callable, NamedTuple

from kfp import compiler, dsl, kubernetes

from segrepro_components import DEFAULT_IMAGE, StageComponents
from segrepro_pipelines.cluster import ClusterConfig
from segrepro_pipelines.trainjob import launch_trainjob

PIPELINE_NAME = "cityscapes-benchmark"


class Row(NamedTuple):
    """One benchmark row as the graph needs it; ``init`` is the row it starts from (or None)."""

    name: str
    method: str
    recipe: str
    dataset: str
    init: str | None = None
    submit: bool = False


def benchmark_rows(params_path: Path = Path("params.yaml")) -> list[Row]:
    """The validated ``benchmark:`` rows, each after the row its recipe starts from (init_from)."""
    from segrepro.engine.config import load_params
    from segrepro.engine.recipe import resolve, validate_params

    params = load_params(params_path)
    validate_params(params)  # also checks that every init_from row is a benchmark row
    submit = {(r["method"], r["recipe"]) for r in (params.get("submit") or {}).values()}
    rows = {}
    for name, row in (params.get("benchmark") or {}).items():
        init_from = resolve(params, row["method"], row["recipe"]).init_from
        rows[name] = Row(name, row["method"], row["recipe"], row["dataset"],
                         init_from.replace("/", "-") if init_from else None, (row["method"], row["recipe"]) in submit)
    ordered: dict[str, Row] = {}

    def place(row: Row) -> None:
        if row.init is not None and row.init not in ordered:
            place(rows[row.init])
        ordered.setdefault(row.name, row)

    for row in rows.values():
        place(row)
    return list(ordered.values())


def _k8s(task: Any, cluster: ClusterConfig, image: Any, gpu: bool) -> Any:
    """Image, shared volume, secrets as env and (GPU tasks) node placement for one task."""
    task.set_container_image(image)
    kubernetes.mount_pvc(task, pvc_name=cluster.pvc_name, mount_path=cluster.mount_path)
    for secret, key, env, optional in cluster.secret_env():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={key: env}, optional=optional)
    if gpu:
        for label, value in cluster.node_selector.items():
            kubernetes.add_node_selector(task, label_key=label, label_value=value)
        for toleration in cluster.tolerations:
            kubernetes.add_toleration(task, **toleration)
    return task


def build_graph(stages: StageComponents, cluster: ClusterConfig, rows: list[Row], multi_node: bool = True) -> Callable:
    """The pipeline function over ``stages`` (container or local components, same signatures).

    ``multi_node`` adds the ``num_nodes > 1`` branch (a Kubeflow Trainer TrainJob) joined with
    ``dsl.OneOf``, for rows that start from scratch; the local build leaves it out because kfp.local resolves
    OneOf only for parameters, not artifacts, and a TrainJob needs a cluster anyway. A multi-stage row trains
    on one node (the TrainJob launcher takes no init weights).
    """

    def train_step(row: Row, gpus: Any, image: Any, dataset: Any, init: Any) -> Any:
        kwargs = {"init": init} if init is not None else {}
        train = stages.train(method=row.method, recipe=row.recipe, gpus=gpus, dataset=dataset, **kwargs)
        _k8s(train, cluster, image, gpu=True).set_display_name(f"train-{row.name}")
        train.set_accelerator_type(cluster.accelerator).set_accelerator_limit(gpus)
        train.set_cpu_request(cluster.train_cpu).set_memory_request(cluster.train_memory)
        train.set_retry(cluster.train_retries).set_caching_options(False)
        return train.outputs["model"]

    @dsl.pipeline(name=PIPELINE_NAME, description="Train and evaluate each benchmark row, submit the test rows; "
                  "one leaderboard.")
    def cityscapes_benchmark(
        gpus: int = 4,
        num_nodes: int = 1,
        image: str = DEFAULT_IMAGE,
        data_root: str = f"{cluster.mount_path}/data",
    ):
        datasets = {}
        for name in dict.fromkeys(row.dataset for row in rows):
            prepare = _k8s(stages.prepare(data_root=data_root, name=name), cluster, image, gpu=False)
            prepare.set_display_name(f"prepare-{name}").set_caching_options(True)
            datasets[name] = prepare.outputs["dataset"]
        models: dict[str, Any] = {}
        runs = None
        for row in rows:
            dataset = datasets[row.dataset]
            if not multi_node or row.init is not None:
                model = train_step(row, gpus, image, dataset, models.get(row.init or ""))
            else:
                with dsl.If(num_nodes == 1, name=f"single-node-{row.name}"):
                    single = train_step(row, gpus, image, dataset, None)
                with dsl.Else(name=f"multi-node-{row.name}"):
                    launch = launch_trainjob(method=row.method, recipe=row.recipe, gpus=gpus, num_nodes=num_nodes,
                                             image=image, config_json=cluster.to_json(), dataset=dataset)
                    _k8s(launch, cluster, image, gpu=False).set_caching_options(False)
                model = dsl.OneOf(single, launch.outputs["model"])
            models[row.name] = model
            evaluate = stages.evaluate(method=row.method, dataset=dataset, model=model)
            evaluate.set_display_name(f"evaluate-{row.name}")
            gpu_tasks = [evaluate]
            if row.submit:
                gpu_tasks.append(stages.submit(method=row.method, dataset=dataset, model=model)
                                 .set_display_name(f"submit-{row.name}"))
            for task in gpu_tasks:
                _k8s(task, cluster, image, gpu=True)
                task.set_accelerator_type(cluster.accelerator).set_accelerator_limit(1)
                task.set_cpu_request(cluster.eval_cpu).set_memory_request(cluster.eval_memory)
            previous = {"previous": runs} if runs is not None else {}
            collect = stages.collect(row=row.name, result=evaluate.outputs["results"], **previous)
            runs = _k8s(collect.set_display_name(f"collect-{row.name}"), cluster, image, gpu=False).outputs["runs"]
        board = stages.leaderboard(runs=runs)
        _k8s(board, cluster, image, gpu=False)

    return cityscapes_benchmark


def container_pipeline(cluster: ClusterConfig | None = None, params_path: Path = Path("params.yaml")) -> Callable:
    """The cluster build: container components running the segrepro image."""
    from segrepro_components.container import container_components

    return build_graph(container_components(), cluster or ClusterConfig(), benchmark_rows(params_path))


def local_pipeline(params_path: Path = Path("params.yaml")) -> Callable:
    """The local build: Python components calling ``segrepro.stages`` (for SubprocessRunner)."""
    from segrepro_components.local import LOCAL

    return build_graph(LOCAL, ClusterConfig(), benchmark_rows(params_path), multi_node=False)


def compile_pipeline(out: Path, cluster: ClusterConfig | None = None, params_path: Path = Path("params.yaml")) -> Path:
    """Write the IR YAML of the container build to ``out``."""
    from segrepro.io import atomic_path

    with atomic_path(out) as tmp:
        compiler.Compiler().compile(container_pipeline(cluster, params_path), str(tmp.with_suffix(".yaml")))
        tmp.with_suffix(".yaml").replace(tmp)
    return out
