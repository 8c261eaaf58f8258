"""A real `mlflow server`: the leaderboard run, its table and the model registry; `segrepro ui` starts one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch

from segrepro import stages
from segrepro.tracking.mlflow_tracker import MlflowTracker
from tests.servers import free_port, mlflow_server
from tests.test_leaderboard import make_run


def _train_run(tmp: Path, method: str) -> str:
    """A training run as the train stage logs it (tags + checkpoints/final.pt)."""
    ckpt = tmp / f"{method}.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, ckpt)
    tracker = MlflowTracker(run_name=f"{method}-demo", tags={"method": method, "stage": "train", "git_sha": "cafe"},
                            params={"recipe": "demo"})
    tracker.log_checkpoint(ckpt, "final")
    tracker.end()
    return tracker.run_id


def test_leaderboard_logs_table_and_registers_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "server") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "segrepro-test")
        runs = tmp_path / "runs"
        make_run(runs, "ann", "demo", "tiny", 0.4, {"road": 0.6})
        make_run(runs, "alignseg", "demo", "tiny", 0.3, {"road": 0.5})
        for method in ("ann", "alignseg"):
            run_id = _train_run(tmp_path, method)
            path = runs / method / "train_summary.json"
            path.write_text(path.read_text().replace('"abc"', f'"{run_id}"'))

        first = stages.leaderboard(runs, tmp_path / "lb", tmp_path / "no-params.yaml")
        second = stages.leaderboard(runs, tmp_path / "lb", tmp_path / "no-params.yaml")

        client = MlflowClient(url)
        run = client.get_run(first["mlflow_run_id"])
        assert run.data.tags["stage"] == "leaderboard" and run.info.status == "FINISHED"
        mlflow.set_tracking_uri(url)
        table = mlflow.load_table("leaderboard.json", run_ids=[first["mlflow_run_id"]])
        assert sorted(table["method"]) == ["alignseg", "ann"]
        artifacts = {a.path for a in client.list_artifacts(first["mlflow_run_id"], "leaderboard")}
        assert "leaderboard/leaderboard.html" in artifacts and "leaderboard/metrics.json" in artifacts
        assert (tmp_path / "lb" / "leaderboard.csv").read_text().count("cafe") == 2

        for method in ("ann", "alignseg"):
            versions = client.search_model_versions(f"name = 'segrepro-{method}'")
            assert len(versions) == 1  # the second leaderboard did not register the same run again
            current = client.get_model_version_by_alias(f"segrepro-{method}", "leaderboard")
            assert current.version == versions[0].version and current.tags["mIoU"] in ("40.0000", "30.0000")
            assert client.get_model_version_by_alias(f"segrepro-{method}", "best").version == current.version
        assert second["mlflow_run_id"] != first["mlflow_run_id"]


def test_ui_starts_server_and_prints_url(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "segrepro.cli", "ui", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'ui.db'}", "--artifacts-destination", str(tmp_path / "art")]
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(url + "/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        assert requests.get(url + "/health", timeout=5).ok
        assert f"MLflow UI: {url}" in (tmp_path / "ui.log").read_text()
        assert (tmp_path / "art").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
