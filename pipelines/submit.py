"""Submitting a compiled pipeline to a Kubeflow Pipelines endpoint (documented; no cluster in CI)."""

from pathlib import Path
from typing import Any


def submit_run(host: str, package: Path, arguments: dict[str, Any], experiment: str, namespace: str | None,
               run_name: str | None = None) -> str:
    """Create a run of ``package`` with kfp.Client; returns the run id.

    Authentication is kfp.Client's own (in-cluster service account, or KF_PIPELINES_SA_TOKEN_PATH);
    no token is taken on the command line.
    """
    import kfp

    from segrepro.errors import UserError

    if not Path(package).is_file():
        raise UserError(f"{package}: pipeline package not found; write it with `segrepro pipeline compile --out {package}`")
    client = kfp.Client(host=host, namespace=namespace or "kubeflow")
    run = client.create_run_from_pipeline_package(
        str(package), arguments={k: v for k, v in arguments.items() if v is not None},
        run_name=run_name, experiment_name=experiment, namespace=namespace,
    )
    return run.run_id
