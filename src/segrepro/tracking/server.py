"""``segrepro ui``: the project's MLflow server (tracking + served artifacts + model registry).

Defaults match where the stages log without a server (``./mlflow.db``, artifacts in ``./mlartifacts``),
so the UI shows every run already there. Both stores pass through: a team points
``--backend-store-uri`` at PostgreSQL and ``--artifacts-destination`` at ``s3://bucket/prefix``
(endpoint and keys from ``MLFLOW_S3_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``;
clients then need no S3 credentials because the server proxies artifacts).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from segrepro.errors import UserError
from segrepro.tracking.mlflow_tracker import redact, require_mlflow


def default_backend_store(cwd: Path | None = None) -> str:
    return f"sqlite:///{(cwd or Path.cwd()).resolve() / 'mlflow.db'}"


def default_artifacts(cwd: Path | None = None) -> str:
    return str((cwd or Path.cwd()).resolve() / "mlartifacts")


def server_command(
    host: str, port: int, backend_store_uri: str, artifacts_destination: str, workers: int = 1
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        "--workers",
        str(workers),
    ]


def serve(
    host: str = "127.0.0.1",
    port: int = 5000,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    workers: int = 1,
) -> int:
    """Run the server in the foreground until Ctrl-C; returns its exit status."""
    require_mlflow("segrepro ui")
    backend = backend_store_uri or default_backend_store()
    artifacts = artifacts_destination or default_artifacts()
    if (
        artifacts.startswith("s3://")
        and not os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        and not os.environ.get("AWS_ENDPOINT_URL")
    ):
        print("note: MLFLOW_S3_ENDPOINT_URL is not set; using AWS S3 itself", file=sys.stderr)
    if not artifacts.startswith(("s3://", "gs://", "wasbs://", "file:")):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    print(f"MLflow UI: {url}  (backend {redact(backend)}, artifacts {redact(artifacts)})", flush=True)
    print(f"log to it with: export MLFLOW_TRACKING_URI={url}", flush=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")}
    try:
        proc = subprocess.Popen(server_command(host, port, backend, artifacts, workers), env=env)
    except OSError as err:
        raise UserError(f"cannot start mlflow server ({err}); is mlflow installed in this environment?") from None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
