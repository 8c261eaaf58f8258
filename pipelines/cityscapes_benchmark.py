"""The ``cityscapes_benchmark`` pipeline: prepare, then per method train → evaluate → submit, then a
leaderboard over all methods.

One graph definition, :func:`build_graph`, takes the stage components as an argument: the
container build (:func:`container_pipeline`, compiled for clusters) and the local build
(:func:`local_pipeline`, run by ``kfp.local.SubprocessRunner`` in the tests) are the same graph.
"""

from pathlib import Path
from typing import Any, Callable, List

from kfp import compiler, dsl, kubernetes

from components import DEFAULT_IMAGE, StageComponents
from pipelines.cluster import ClusterConfig
from pipelines.trainjob import launch_trainjob

PIPELINE_NAME = "cityscapes-benchmark"


def default_methods(params_path: Path = Path("params.yaml")) -> list[str]:
    """Methods of the params.yaml ``benchmark:`` rows whose official recipe trains on Cityscapes."""
    from segrepro.engine.config import load_params

    params = load_params(params_path)
    recipes = params.get("recipes") or {}
    methods = dict.fromkeys(row["method"] for row in (params.get("benchmark") or {}).values())
    return [m for m in methods if (recipes.get(m, {}).get("official") or {}).get("dataset") == "cityscapes"]


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


def build_graph(stages: StageComponents, cluster: ClusterConfig, methods: list[str], multi_node: bool = True) -> Callable:
    """The pipeline function over ``stages`` (container or local components, same signatures).

    ``multi_node`` adds the ``num_nodes > 1`` branch (a Kubeflow Trainer TrainJob) joined with
    ``dsl.OneOf``; the local build leaves it out because kfp.local resolves OneOf only for
    parameters, not artifacts, and a TrainJob needs a cluster anyway.
    """

    def train_step(method: Any, recipe: Any, gpus: Any, num_nodes: Any, image: Any, dataset: Any) -> Any:
        train = stages.train(method=method, recipe=recipe, gpus=gpus, dataset=dataset)
        _k8s(train, cluster, image, gpu=True)
        train.set_accelerator_type(cluster.accelerator).set_accelerator_limit(gpus)
        train.set_cpu_request(cluster.train_cpu).set_memory_request(cluster.train_memory)
        train.set_retry(cluster.train_retries).set_caching_options(False)
        return train.outputs["model"]

    @dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate and submit each method; one leaderboard.")
    def cityscapes_benchmark(
        methods: List[str] = methods,
        recipe: str = "official",
        gpus: int = 4,
        num_nodes: int = 1,
        image: str = DEFAULT_IMAGE,
        data_root: str = f"{cluster.mount_path}/data/cityscapes",
    ):
        prepare = _k8s(stages.prepare(data_root=data_root), cluster, image, gpu=False)
        prepare.set_caching_options(True)
        dataset = prepare.outputs["dataset"]
        with dsl.ParallelFor(methods, name="per-method") as method:
            if not multi_node:
                model = train_step(method, recipe, gpus, num_nodes, image, dataset)
            else:
                with dsl.If(num_nodes == 1, name="single-node"):
                    single = train_step(method, recipe, gpus, num_nodes, image, dataset)
                with dsl.Else(name="multi-node"):
                    launch = launch_trainjob(method=method, recipe=recipe, gpus=gpus, num_nodes=num_nodes,
                                             image=image, config_json=cluster.to_json(), dataset=dataset)
                    _k8s(launch, cluster, image, gpu=False).set_caching_options(False)
                model = dsl.OneOf(single, launch.outputs["model"])
            evaluate = stages.evaluate(method=method, dataset=dataset, model=model)
            submit = stages.submit(method=method, dataset=dataset, model=model)
            for task in (evaluate, submit):
                _k8s(task, cluster, image, gpu=True)
                task.set_accelerator_type(cluster.accelerator).set_accelerator_limit(1)
                task.set_cpu_request(cluster.eval_cpu).set_memory_request(cluster.eval_memory)
        board = stages.leaderboard(results=dsl.Collected(evaluate.outputs["results"]))
        _k8s(board, cluster, image, gpu=False)

    return cityscapes_benchmark


def container_pipeline(cluster: ClusterConfig | None = None, params_path: Path = Path("params.yaml")) -> Callable:
    """The cluster build: container components running the segrepro image."""
    from components.container import container_components

    return build_graph(container_components(), cluster or ClusterConfig(), default_methods(params_path))


def local_pipeline(methods: list[str]) -> Callable:
    """The local build: Python components calling ``segrepro.stages`` (for SubprocessRunner)."""
    from components.local import LOCAL

    return build_graph(LOCAL, ClusterConfig(), methods, multi_node=False)


def compile_pipeline(out: Path, cluster: ClusterConfig | None = None, params_path: Path = Path("params.yaml")) -> Path:
    """Write the IR YAML of the container build to ``out``."""
    from segrepro.io import atomic_path

    with atomic_path(out) as tmp:
        compiler.Compiler().compile(container_pipeline(cluster, params_path), str(tmp.with_suffix(".yaml")))
        tmp.with_suffix(".yaml").replace(tmp)
    return out
