"""Multi-node training through a Kubeflow Trainer v2 ``TrainJob`` (kfp v2 has no PyTorchJob step).

:func:`trainjob_spec` is a plain function (unit-tested offline against the ``kubeflow`` SDK's
models); :func:`run_trainjob` submits it and waits; ``launch_trainjob`` is the kfp component that
stages the dataset onto the shared volume, runs the job and returns its run folder as a Model.
"""


import shutil
import time
from pathlib import Path
from typing import Any

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from segrepro_components import DEFAULT_IMAGE
from segrepro_components.cli_args import segrepro_args
from segrepro_pipelines.cluster import NODE, VOLUME, ClusterConfig

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"


def train_command(method: str, recipe: str, gpus_per_node: int, data: str, out: str) -> list[str]:
    """torchrun (nodes and rendezvous from the runtime's PET_* env) running ``segrepro train``."""
    return ["torchrun", "--nproc_per_node", str(gpus_per_node), "--no-python",
            *segrepro_args(["train"], method=method, recipe=recipe, data=data, out=out)]


def trainjob_spec(
    name: str, image: str, method: str, recipe: str, num_nodes: int, gpus_per_node: int,
    data: str, out: str, config: ClusterConfig, namespace: str | None = None,
) -> Any:
    """The TrainJob as the SDK's ``TrainerV1alpha1TrainJob`` (validated on construction)."""
    from kubeflow_trainer_api import models

    if num_nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"need at least one node and one GPU per node, got {num_nodes} x {gpus_per_node}")
    per_node = {config.accelerator: str(gpus_per_node), "cpu": config.train_cpu, "memory": config.train_memory}
    env = [
        {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}
        for secret, key, env_name, optional in config.secret_env()
    ]
    pod_patch = {
        "volumes": [{"name": VOLUME, "persistentVolumeClaim": {"claimName": config.pvc_name}}],
        "containers": [{"name": NODE, "volumeMounts": [{"name": VOLUME, "mountPath": config.mount_path}]}],
        "nodeSelector": dict(config.node_selector) or None,
        "tolerations": list(config.tolerations) or None,
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"segrepro/method": method}},
        "spec": {
            "runtimeRef": {"name": config.trainjob_runtime, "kind": "ClusterTrainingRuntime", "apiGroup": GROUP},
            "trainer": {
                "image": image,
                "command": train_command(method, recipe, gpus_per_node, data, out),
                "numNodes": num_nodes,
                "numProcPerNode": gpus_per_node,
                "resourcesPerNode": {"limits": per_node, "requests": per_node},
                "env": env or None,
            },
            "runtimePatches": [{
                "manager": "segrepro",
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
                    {"name": NODE, "template": {"spec": {"template": {"spec": pod_patch}}}},
                ]}}},
            }],
        },
    }
    return models.TrainerV1alpha1TrainJob.from_dict(body)


def job_state(status: dict | None) -> tuple[str, str]:
    """("Complete"|"Failed"|"Running", message) from a TrainJob status's conditions."""
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"], f"{cond.get('reason', '')}: {cond.get('message', '')}"
    return "Running", ""


def run_trainjob(job: Any, namespace: str, poll_s: float = 30.0) -> None:
    """Create the TrainJob in-cluster and wait; raise RuntimeError with its status if it fails."""
    from kubernetes import client, config

    config.load_incluster_config()
    api = client.CustomObjectsApi()
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job.to_dict())
    name = job.metadata.name
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state, message = job_state(obj.get("status"))
        if state == "Complete":
            return
        if state == "Failed":
            raise RuntimeError(f"TrainJob {namespace}/{name} failed: {message}")
        time.sleep(poll_s)


def stage_and_run(method: str, recipe: str, gpus: int, num_nodes: int, image: str, dataset_dir: str,
                  model_dir: str, job_name: str, config_json: str) -> None:
    """Copy the dataset onto the shared volume, run the TrainJob there, copy its run folder back."""
    from segrepro_components import DATASET_SUBDIR

    config = ClusterConfig.from_json(config_json)
    work = Path(config.mount_path) / "trainjobs" / job_name
    if not (work / "data").is_dir():  # a retried launcher reuses the staged copy
        shutil.copytree(dataset_dir, work / "data")
    data, out = work / "data" / DATASET_SUBDIR, work / "run"
    namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    job = trainjob_spec(job_name, image, method, recipe, num_nodes, gpus, str(data), str(out), config, namespace)
    run_trainjob(job, namespace)
    shutil.copytree(out, model_dir, dirs_exist_ok=True)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def launch_trainjob(method: str, recipe: str, gpus: int, num_nodes: int, image: str, config_json: str,
                    dataset: Input[Dataset], model: Output[Model]):
    """kfp task that owns one multi-node TrainJob; its Model is the job's run folder."""
    import re
    from pathlib import Path

    from segrepro_pipelines.trainjob import stage_and_run

    job_name = re.sub(r"[^a-z0-9-]", "-", f"segrepro-{method}-{Path(model.path).parent.name}".lower())[:63]
    stage_and_run(method, recipe, gpus, num_nodes, image, dataset.path, model.path, job_name.strip("-"), config_json)
