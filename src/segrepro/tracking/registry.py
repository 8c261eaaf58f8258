"""MLflow side of the leaderboard: run facts for the table, the ``stage=leaderboard`` run, the model registry.

Every method's trained weights are registered as ``segrepro-<method>`` (one version per training run,
never duplicated). The alias ``leaderboard`` points at the version the current leaderboard shows and
``best`` at the version with the highest reproduced mIoU so far.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from segrepro.tracking.mlflow_tracker import MlflowTracker, check_reachable, git_state, tracking_uri

LEADERBOARD_ALIAS = "leaderboard"
BEST_ALIAS = "best"
CHECKPOINT_ARTIFACT = "checkpoints/final.pt"  # what the train stage logs (MlflowTracker.log_checkpoint)


def model_name(method: str) -> str:
    return f"segrepro-{method}"


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """A browser link for a server, ``runs:/<id>`` for a local store (open it with `segrepro ui`)."""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"runs:/{run_id}"


def mlflow_run_info(run_ids: Iterable[str], uri: str | None = None) -> dict[str, dict[str, str]]:
    """git SHA, DVC data hash and link of each training run found in the tracking store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = uri or tracking_uri()
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    info: dict[str, dict[str, str]] = {}
    for run_id in filter(None, run_ids):
        try:
            run = client.get_run(run_id)
        except MlflowException:  # a run folder trained against another store: leave the cells empty
            continue
        tags = run.data.tags
        info[run_id] = {
            "git_sha": tags.get("git_sha", ""),
            "dvc_data_hash": tags.get("dvc_data_hash", ""),
            "link": run_link(uri, run.info.experiment_id, run_id),
        }
    return info


def register_method(client: Any, method: str, run_id: str, miou: float) -> str:  # noqa: F821
    """Register ``run_id``'s checkpoint as a version of ``segrepro-<method>`` (once) and move the aliases."""
    name = model_name(method)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"{method} weights trained by segrepro (plain state_dict)")
    versions = client.search_model_versions(f"name = '{name}'")
    version = next((v for v in versions if v.run_id == run_id), None)
    if version is None:
        version = client.create_model_version(name, source=f"runs:/{run_id}/{CHECKPOINT_ARTIFACT}", run_id=run_id)
        versions = [*versions, version]
    if not math.isnan(miou):
        client.set_model_version_tag(name, version.version, "mIoU", f"{miou:.4f}")
    client.set_registered_model_alias(name, LEADERBOARD_ALIAS, version.version)

    def score(v: object) -> float:
        text = client.get_model_version(name, v.version).tags.get("mIoU")  # type: ignore[attr-defined]
        return float(text) if text else -math.inf

    best = max(versions, key=score)
    client.set_registered_model_alias(name, BEST_ALIAS, best.version)
    return str(version.version)


def log_leaderboard(table: pd.DataFrame, files: Mapping[str, Path], run_ids: Mapping[str, str]) -> str:
    """One ``stage=leaderboard`` run with the table (``log_table``) and files; registers each method's model."""
    tracker = MlflowTracker(
        run_name="leaderboard",
        tags={"stage": "leaderboard", "method": "all", **git_state()},
        params={"methods": ",".join(table["method"].astype(str))},
    )
    status = "FAILED"
    try:
        printable = table.copy()
        for column in printable.columns[printable.dtypes.map(lambda d: d.kind == "O")]:
            printable[column] = printable[column].astype(str)
        tracker.mlflow.log_table(printable, artifact_file="leaderboard.json")
        for path in files.values():
            tracker.log_file(path, "leaderboard")
        for _, row in table.iterrows():
            if not pd.isna(row["mIoU"]):
                tracker.log_metrics({f"mIoU/{row['method']}/{row['recipe']}": float(row["mIoU"])}, step=0)
        client = tracker.mlflow.MlflowClient()
        versions = {}
        for _, row in table.iterrows():
            run_id = run_ids.get(str(row["method"]))
            if run_id:
                versions[model_name(str(row["method"]))] = register_method(
                    client, str(row["method"]), run_id, float(row["mIoU"])
                )
        tracker.set_tags({f"registered/{k}": v for k, v in versions.items()})
        status = "FINISHED"
        return tracker.run_id
    finally:
        tracker.end(status)
