"""MLflow for training runs: one run per training (rank 0 only), params, metrics, checkpoints, tags.

The tracking URI follows ``MLFLOW_TRACKING_URI`` and defaults to a sqlite store in the project
(``./mlflow.db``, artifacts in ``./mlartifacts``). A remote server is probed *before* training so an
unreachable one fails in seconds, not after an hour. Credentials never reach params, tags or logs:
URIs are redacted and credential-like keys are dropped from params.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from segrepro.engine.config import flatten
from segrepro.errors import UserError

DEFAULT_EXPERIMENT = "segrepro"
_USERINFO = re.compile(r"(?<=://)[^/@]+@")


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
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
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


def environment_tags(world_size: int) -> dict[str, str]:
    return {
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda or "cpu"),
        "world_size": str(world_size),
    }


class MlflowTracker:
    """One MLflow run; implements the engine's ``Tracker`` protocol."""

    def __init__(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any],
                 experiment: str | None = None, uri: str | None = None) -> None:
        import mlflow

        self.mlflow = mlflow
        uri = uri or tracking_uri()
        check_reachable(uri)
        mlflow.set_tracking_uri(uri)
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
        if mlflow.get_experiment_by_name(name) is None:
            location = None
            if uri.startswith("sqlite:///"):
                location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(name, artifact_location=location)
        mlflow.set_experiment(name)
        self.run = mlflow.start_run(run_name=run_name, tags=dict(tags))
        self.run_id = self.run.info.run_id
        flat = {k: (str(v)[:5000] if v is not None else "None") for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i:i + 100]))

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

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.mlflow.set_tags(dict(tags))

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)
