"""Training end to end on a tiny synthetic Cityscapes: resume, checkpoints, DDP, MLflow.

All runs go through the real CLI (`segrepro train`) in a subprocess, with MLflow pointed at a store in
the test's own folder.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segrepro.data import prepare_dataset, synth_dataset

REPO = Path(__file__).resolve().parents[1]
SEGREPRO = [sys.executable, "-m", "segrepro.cli"]
FAST = [
    "--set", "train.{m}.iterations=6", "--set", "train.{m}.crop=64", "--set", "train.{m}.batch_size=4",
    "--set", "train.{m}.per_gpu_batch=2", "--set", "train.{m}.workers=0", "--set", "train.{m}.checkpoint_every=1",
    "--set", "train.{m}.log_every=1",
]


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "cityscapes"
    synth_dataset("cityscapes", root, "6,2,2", (64, 128), seed=0)
    prepare_dataset("cityscapes", root)
    return root


def _env(tmp: Path, tracking: str | None = None) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking or f"sqlite:///{tmp / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _train_cmd(method: str, data: Path, out: Path, *extra: str) -> list[str]:
    sets = [a.format(m=method) for a in FAST]
    return [*SEGREPRO, "train", "--method", method, "--data", str(data), "--out", str(out),
            "--params", str(REPO / "params.yaml"), *sets, *extra]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


def _losses(run: Path) -> list[float]:
    with (run / "train_log.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_kill_and_resume_is_bit_identical(cityscapes: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd("alignseg", cityscapes, ref), check=True, env=_env(tmp_path), cwd=tmp_path,
                   capture_output=True)
    run = tmp_path / "killed"
    kill_after = random.Random().randint(1, 4)
    proc = subprocess.Popen(_train_cmd("alignseg", cityscapes, run), env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    target = run / "checkpoints" / f"iter_{kill_after:08d}.pt"
    deadline = time.monotonic() + 600
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model.pt").exists(), "the run finished before it could be killed"
    subprocess.run(_train_cmd("alignseg", cityscapes, run, "--resume"), check=True, env=_env(tmp_path),
                   cwd=tmp_path, capture_output=True)
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ after kill at iteration {kill_after}"
    assert _losses(ref) == _losses(run)


def test_truncated_checkpoint_is_skipped(cityscapes: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = _train_cmd("gald", cityscapes, run, "--set", "train.gald.iterations=3")
    subprocess.run(cmd, check=True, env=_env(tmp_path), cwd=tmp_path, capture_output=True)
    last = run / "checkpoints" / "iter_00000003.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (run / "model.pt").unlink()
    res = subprocess.run(cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "skipping unreadable checkpoint" in res.stderr and "iter_00000003.pt" in res.stderr
    assert "resuming from" in res.stderr or (run / "model.pt").exists()
    assert (run / "model.pt").exists()


@pytest.mark.parametrize("method", ["alignseg", "acfnet", "gald", "dgcnet", "ann"])
def test_demo_profile_runs(method: str, cityscapes: Path, tmp_path: Path) -> None:
    run = tmp_path / method
    res = subprocess.run(_train_cmd(method, cityscapes, run, "--set", f"train.{method}.iterations=2"),
                         env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{method}: val mIoU" in res.stdout
    assert (run / "model.pt").is_file() and (run / "config.yaml").is_file()
    assert len(_losses(run)) == 2


def test_self_supervised_demo_runs(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    synth_dataset("voc", voc, "6,2", (64, 64), seed=0)
    run = tmp_path / "ssl"
    cmd = [*SEGREPRO, "train", "--method", "alignseg_ssl", "--data", str(voc), "--out", str(run),
           "--params", str(REPO / "params.yaml"), "--set", "train.alignseg_ssl.epochs=1",
           "--set", "train.alignseg_ssl.batch_size=2", "--set", "train.alignseg_ssl.per_gpu_batch=2",
           "--set", "train.alignseg_ssl.workers=0"]
    res = subprocess.run(cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "alignseg_ssl: val mIoU" in res.stdout


def test_bad_override_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([*SEGREPRO, "train", "--method", "ann", "--params", str(REPO / "params.yaml"), "--set", "oops"],
                         env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == ["error: --set 'oops': expected KEY=VALUE, e.g. --set train.ann.lr=0.005"]


def test_one_image_micro_batch_with_global_pooling_is_one_line(cityscapes: Path, tmp_path: Path) -> None:
    # GALD's official recipe holds one image per GPU (SyncBN over 8); on one process that cannot train.
    res = subprocess.run(_train_cmd("gald", cityscapes, tmp_path / "run", "--set", "train.gald.per_gpu_batch=1"),
                         env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: a micro-batch of 1 image(s)")
    assert "train.gald.per_gpu_batch=2" in errors[0]


def test_unreachable_tracking_server_fails_fast(cityscapes: Path, tmp_path: Path) -> None:
    from tests.servers import free_port

    env = _env(tmp_path, tracking=f"http://user:secret@127.0.0.1:{free_port()}")
    res = subprocess.run(_train_cmd("alignseg", cityscapes, tmp_path / "r"), env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "unreachable" in res.stderr and "secret" not in res.stderr
    assert "Traceback" not in res.stderr


def test_nproc_checks_once_before_any_process(cityscapes: Path, tmp_path: Path) -> None:
    """``--nproc 2`` validates in the launcher: one error line (not one per rank), exit 2, no run folder."""
    res = subprocess.run(_train_cmd("gald", cityscapes, tmp_path / "run", "--nproc", "2", "--set",
                                    "train.gald.iteration=5"), env=_env(tmp_path), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and not (tmp_path / "run").exists()
    assert res.stderr.strip().splitlines() == ["error: train.gald.iteration: unknown key; did you mean iterations?"]


def test_nproc_divergence_is_one_line(cityscapes: Path, tmp_path: Path) -> None:
    """Both ranks see the same all-reduced NaN loss and stop; only rank 0 prints it."""
    res = subprocess.run(_train_cmd("gald", cityscapes, tmp_path / "run", "--nproc", "2", "--set",
                                    "train.gald.optimizer.lr=1e12"), env=_env(tmp_path), cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    errors = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert len(errors) == 1 and errors[0].startswith("error: loss became nan at iteration"), res.stderr[-2000:]


def test_two_process_ddp_matches_one_process(cityscapes: Path, tmp_path: Path) -> None:
    """``segrepro train --nproc 2`` (what dvc.yaml runs: torch's elastic launcher, gloo ×2) with the same global
    batch gives the 1-process loss curve and ONE MLflow run."""
    import mlflow

    from tests.servers import mlflow_server

    single, double = tmp_path / "single", tmp_path / "double"
    with mlflow_server(tmp_path / "mlflow") as url:
        env = _env(tmp_path, tracking=url)
        subprocess.run(_train_cmd("gald", cityscapes, single), check=True, env=env, cwd=tmp_path, capture_output=True)
        res = subprocess.run(_train_cmd("gald", cityscapes, double, "--nproc", "2"), env=env, cwd=tmp_path,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        assert _losses(double) == pytest.approx(_losses(single), rel=1e-4, abs=1e-5)
        client = mlflow.MlflowClient(url)
        exp = client.get_experiment_by_name("segrepro-cityscapes")  # one experiment per dataset
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 2  # one per training, never one per rank
        run = next(r for r in runs if r.data.tags.get("world_size") == "2")
        tags = run.data.tags
        for key in ("method", "recipe", "dataset", "git_sha", "git_dirty", "torch_version", "cuda_version", "world_size",
                    "cpu_model", "cpu_isa", "cpu_flags", "torch_threads", "onednn_version", "mkl_version"):
            assert key in tags, key
        assert tags["method"] == "gald" and tags["stage"] == "train"
        assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["cityscapes/train"]
        from segrepro.engine.config import load_params, resolve_recipe

        lr = resolve_recipe(load_params(REPO / "params.yaml"), "gald").optimizer.lr
        assert run.data.params["optimizer.lr"] == str(lr) and run.data.params["iterations"] == "6"
        assert {"loss", "lr", "img_per_s", "val_mIoU"} <= set(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 6
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
        assert artifacts == ["checkpoints/final.pt"]
