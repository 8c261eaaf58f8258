"""MLflow for training runs: one run per training (rank 0 only), params, metrics, checkpoints, tags.

The tracking URI follows ``MLFLOW_TRACKING_URI`` and defaults to a sqlite store in the project
(``./mlflow.db``, artifacts in ``./mlartifacts``). A remote server is probed *before* training so an
unreachable one fails in seconds, not after an hour. Credentials never reach params, tags or logs:
URIs are redacted and credential-like keys are dropped from params.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from segrepro.engine.config import flatten
from segrepro.errors import UserError, require_extra
from segrepro.machine import cpu_info

DEFAULT_EXPERIMENT = "segrepro"
_USERINFO = re.compile(r"(?<=://)[^/@]+@")


def require_mlflow(purpose: str, optional: bool = False) -> None:
    """Fail with the extra to install before any work when MLflow (the ``pipeline`` extra) is missing;
    ``optional``: the command also runs with ``--no-mlflow``."""
    require_extra("pipeline", purpose, "mlflow", alternative="pass --no-mlflow" if optional else "")


def redact(uri: str) -> str:
    """``https://user:pw@host`` → ``https://***@host``."""
    return _USERINFO.sub("***@", uri)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise a one-line UserError when an HTTP tracking server does not answer ``/health``."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        resp.raise_for_status()
    except Exception as err:  # connection refused, timeout, HTTP error
        reason = type(err).__name__
        raise UserError(
            f"MLflow tracking server {redact(uri)} is unreachable ({reason}); start it with `segrepro ui` "
            "or unset MLFLOW_TRACKING_URI to use the local store"
        ) from None


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """Commit SHA and dirty flag of the project checkout ("unknown" outside git)."""

    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except Exception:
            return ""

    sha = run("rev-parse", "HEAD") or "unknown"
    dirty = run("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": str(bool(dirty)).lower() if sha != "unknown" else "unknown"}


def dvc_data_hash(data_root: Path) -> str | None:
    """The md5 DVC recorded for ``data_root`` (its ``.dvc`` file or dvc.lock), when it is tracked."""
    import yaml

    dvc_file = data_root.with_name(data_root.name + ".dvc")
    candidates = [dvc_file] if dvc_file.is_file() else []
    lock = Path("dvc.lock")
    if lock.is_file():
        candidates.append(lock)
    target = os.path.normpath(str(data_root))
    for path in candidates:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except Exception:
            continue
        outs = list(doc.get("outs", []))
        for stage in (doc.get("stages") or {}).values():
            outs += stage.get("outs", [])
        for out in outs:
            if os.path.normpath(str(out.get("path", ""))) in (target, data_root.name) and out.get("md5"):
                return str(out["md5"])
    return None


def _build_version(prefix: str) -> str:
    """A library's version line from ``torch.__config__.show()`` (e.g. oneDNN "v3.12.0")."""
    for line in torch.__config__.show().splitlines():
        if prefix in line:
            return line.split(prefix, 1)[1].strip().split(" (")[0].split("-Product")[0]
    return "none"


def environment_tags(world_size: int) -> dict[str, str]:
    """Where a figure was made: results differ across CPU kinds, ISAs, thread counts and library builds."""
    model, flags = cpu_info()
    tags = {
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda or "cpu"),
        "world_size": str(world_size),
        "cpu_model": model,
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),  # the kernels torch dispatches to: AVX512, AVX2, ...
        "cpu_flags": flags or "unknown",
        "torch_threads": str(torch.get_num_threads()),
        "onednn_version": _build_version("MKL-DNN ") if torch.backends.mkldnn.is_available() else "none",
        "mkl_version": _build_version("Math Kernel Library Version ") if torch.backends.mkl.is_available() else "none",
    }
    if torch.cuda.is_available():
        tags["cudnn_version"] = str(torch.backends.cudnn.version())
        tags["gpu_model"] = torch.cuda.get_device_name()
    return tags


# MLflow 3's experiment-kind tag: this value opens an experiment on its runs table (model training view),
# not on the GenAI traces overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_RUN_TAG = "mlflow.parentRunId"  # what nests a run under another in the UI
# A saved runs-table view (the UI's "share view" state, stored as an experiment tag): the headline metrics
# as columns. MLflow 3.17 has no server-side default view, so it opens with ``?viewStateShareKey=headline``
# (:func:`headline_view_url`; `segrepro ui` prints it).
HEADLINE_VIEW = "headline"
HEADLINE_METRICS = ("val_mIoU", "mIoU", "iIoU")
_HEADLINE_STATE = json.dumps(
    {"selectedColumns": ["attributes.`Dataset`"] + [f"metrics.`{m}`" for m in HEADLINE_METRICS]}
)


def experiment_name(dataset: str | None = None) -> str:
    """``<base>-<dataset>`` (base: ``MLFLOW_EXPERIMENT_NAME`` or "segrepro"), so one experiment's charts
    never mix class sets; the cross-dataset leaderboard runs go to the base experiment itself."""
    base = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    return f"{base}-{dataset}" if dataset else base


def ensure_experiment(mlflow: Any, name: str, uri: str) -> str:
    """Create ``name`` (artifacts beside a sqlite store) if needed; always tag it as a training experiment."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
        experiment_id = mlflow.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    else:
        experiment_id = experiment.experiment_id
    tags = {} if experiment is None else experiment.tags
    client = mlflow.MlflowClient()
    for key, value in (
        (EXPERIMENT_KIND_TAG, EXPERIMENT_KIND),
        (f"mlflow.sharedViewState.{HEADLINE_VIEW}", _HEADLINE_STATE),
    ):
        if tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def headline_view_url(server: str, experiment_id: str) -> str:
    """The runs table of an experiment with the headline metrics as columns."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={HEADLINE_VIEW}"


class MlflowTracker:
    """One MLflow run; implements the engine's ``Tracker`` protocol.

    ``dataset`` picks the experiment (:func:`experiment_name`), ``parent_run_id`` nests the run under its
    training run, and system metrics are logged where a GPU is present (``system_metrics=None``).
    """

    def __init__(
        self,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        experiment: str | None = None,
        uri: str | None = None,
        dataset: str | None = None,
        parent_run_id: str | None = None,
        system_metrics: bool | None = None,
    ) -> None:
        require_mlflow("MLflow tracking")
        import mlflow

        self.mlflow = mlflow
        uri = uri or tracking_uri()
        check_reachable(uri)
        mlflow.set_tracking_uri(uri)
        ensure_experiment(mlflow, experiment or experiment_name(dataset), uri)
        tags = dict(tags)
        if parent_run_id:
            tags[PARENT_RUN_TAG] = parent_run_id
        if system_metrics is None:
            system_metrics = torch.cuda.is_available()
        self.run = mlflow.start_run(run_name=run_name, tags=tags, log_system_metrics=system_metrics)
        self.run_id = self.run.info.run_id
        flat = {k: (str(v)[:5000] if v is not None else "None") for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_checkpoint(self, path: Path, name: str) -> None:
        """Log a plain state_dict (never a pickled module) as ``checkpoints/<name>.pt``."""
        import tempfile

        state = torch.load(path, map_location="cpu", weights_only=True)
        weights = state["model"] if isinstance(state, dict) and "model" in state else state
        with tempfile.TemporaryDirectory() as tmp:
            dst = Path(tmp) / f"{name}.pt"
            torch.save(weights, dst)
            self.mlflow.log_artifact(str(dst), artifact_path="checkpoints")

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dataset(self, name: str, split: str, root: Path, digest: str | None, context: str) -> None:
        """``mlflow.log_input`` of a dataset split (the UI's "Dataset" column): name, split, DVC hash as the
        digest (else the resolved path's), source path. Nothing is read or uploaded."""
        import hashlib

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        source = resolve_dataset_source(str(Path(root).resolve()))  # a local (or s3://) path source
        digest = digest or hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()
        dataset = MetaDataset(source, name=f"{name}/{split}", digest=digest[:36])  # type: ignore[abstract]
        self.mlflow.log_input(dataset, context=context, tags={"split": split})

    def log_images(self, paths: list[Path], artifact_dir: str) -> None:
        """Images shown in the run's artifact viewer (a sample of overlays)."""
        from PIL import Image

        for path in paths:
            with Image.open(path) as im:
                self.mlflow.log_image(im.convert("RGB"), artifact_file=f"{artifact_dir}/{Path(path).name}")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.mlflow.set_tags(dict(tags))

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)
