"""Kubernetes settings of the benchmark pipeline, fixed at compile time (kfp-kubernetes needs
literal node selectors and tolerations); the run-time knobs are the pipeline parameters."""

import json
from dataclasses import asdict, dataclass, field

NODE = "node"  # replicated job and container name of Kubeflow Trainer's torch-distributed runtime
VOLUME = "segrepro-data"


@dataclass(frozen=True)
class ClusterConfig:
    """Where data and checkpoints live, what the GPU tasks request, and which secrets become env.

    ``mlflow_secret`` must hold ``MLFLOW_TRACKING_URI`` (plus, optionally, ``MLFLOW_TRACKING_TOKEN``);
    ``s3_secret`` (optional) holds ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``
    for s3:// data and MLflow's S3 artifact store. Values never enter the pipeline spec.
    """

    pvc_name: str = "segrepro-data"
    mount_path: str = "/mnt/segrepro"
    accelerator: str = "nvidia.com/gpu"
    trainjob_runtime: str = "torch-distributed"  # ClusterTrainingRuntime of multi-node TrainJobs
    train_cpu: str = "16"
    train_memory: str = "64G"
    eval_cpu: str = "8"
    eval_memory: str = "32G"
    train_retries: int = 2
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)
    mlflow_secret: str = "segrepro-mlflow"
    s3_secret: str = "segrepro-s3"

    def secret_env(self) -> list[tuple[str, str, str, bool]]:
        """(secret, key, env var, optional) for every task that talks to MLflow or S3."""
        return [
            (self.mlflow_secret, "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", False),
            (self.mlflow_secret, "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_TOKEN", True),
            (self.s3_secret, "AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", True),
            (self.s3_secret, "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", True),
            (self.s3_secret, "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL", True),
            (self.s3_secret, "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", True),
        ]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ClusterConfig":
        return cls(**json.loads(text))


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """``["k=v", ...]`` → dict; a malformed item is a one-line UserError naming the fix."""
    from segrepro.errors import UserError

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def parse_toleration(text: str) -> dict[str, str]:
    """``key=nvidia.com/gpu,operator=Exists,effect=NoSchedule`` → kfp-kubernetes toleration kwargs."""
    from segrepro.errors import UserError

    fields = parse_pairs([p for p in text.split(",") if p], "--toleration")
    unknown = set(fields) - {"key", "operator", "value", "effect"}
    if unknown:
        raise UserError(f"--toleration {text!r}: unknown field(s) {sorted(unknown)}; use key, operator, value, effect")
    return fields
