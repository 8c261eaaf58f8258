"""The multi-node contract of the Kubeflow Trainer TrainJob, on this machine: two torchrun "nodes" of one
process each on 127.0.0.1, each with only the environment the ``torch-distributed`` runtime sets (PET_*), each
running exactly the command ``segrepro_pipelines.trainjob`` puts into the TrainJob.

Each node has its own working directory (its own disk): whatever a node writes is visible, so "only rank 0
writes the checkpoints and the MLflow run" is checked, not assumed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import torch
import yaml

from segrepro.engine.distributed import TIMEOUT_ENV
from segrepro_pipelines.trainjob import train_command
from test_engine_train import FAST, REPO, _env, _losses, _weights, cityscapes  # noqa: F401  (cityscapes: fixture)
from tests.servers import free_port, mlflow_server

METHOD, RECIPE = "gald", "demo"  # GALD's tiny variant: BatchNorm layers, per-rank statistics on CPU
NODE_TIMEOUT_S = 600  # a hang fails the test instead of the suite's 900 s timeout


def _params(node: Path, **train: object) -> None:
    """params.yaml in a node's working directory (the TrainJob command names none): the repo's, with the fast
    settings test_engine_train uses as --set overrides, plus ``train``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    fast = {arg.split("=", 1)[0].rsplit(".", 1)[1]: yaml.safe_load(arg.split("=", 1)[1]) for arg in FAST[1::2]}
    params["train"][METHOD].update({**fast, **train})
    node.mkdir(parents=True, exist_ok=True)
    (node / "params.yaml").write_text(yaml.safe_dump(params))


def _node_env(base: dict[str, str], rank: int, port: int) -> dict[str, str]:
    """What Kubeflow Trainer's torch-distributed runtime gives each node's container (numProcPerNode = 1)."""
    env = {k: v for k, v in base.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # torchrun, segrepro of this env
    env.update(
        {
            "PET_NNODES": "2",
            "PET_NODE_RANK": str(rank),
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(port),
            "PET_NPROC_PER_NODE": "1",
        }
    )
    return env


def _signal_node(agent: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal a node's torchrun agent and its workers (SIGKILL: a lost pod): torchrun starts each worker in a
    session of its own, so signalling the agent's process group would miss them."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # a process that ended meanwhile
            continue
    tree, frontier = [], [agent]
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier += [child for child, parent in parents.items() if parent == pid]
    for pid in tree:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextmanager
def _two_nodes(base: dict[str, str], data: Path, nodes: tuple[Path, Path]) -> Iterator[list[subprocess.Popen]]:
    """Start both nodes on the TrainJob's command (its own process group each); kill what is left on exit."""
    cmd = train_command(METHOD, RECIPE, 1, str(data), "run")
    port = free_port()
    procs = []
    for rank, node in enumerate(nodes):
        log = (node / "node.log").open("w")
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=node,
                env=_node_env(base, rank, port),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
    try:
        yield procs
    finally:
        for proc in procs:
            _signal_node(proc.pid)
            proc.wait()


def test_trainjob_command_reads_the_runtime_env() -> None:
    """torchrun takes nodes, node rank and rendezvous from PET_* (its arguments' env fallbacks); the command
    spells none of them and no --standalone, which would ignore them."""
    from torch.distributed.run import get_args_parser

    cmd = train_command(METHOD, RECIPE, 4, "/data", "/out")
    assert cmd[0] == "torchrun" and "--standalone" not in cmd
    spelled = {"--nnodes", "--node-rank", "--node_rank", "--master-addr", "--master-port", "--rdzv-endpoint"}
    assert not spelled & set(cmd)
    env = {
        "PET_NNODES": "2",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "10.0.0.7",
        "PET_MASTER_PORT": "29400",
        "PET_NPROC_PER_NODE": "4",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        args = get_args_parser().parse_args(cmd[1:])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    assert (args.nnodes, args.node_rank, args.master_addr, args.master_port) == ("2", 1, "10.0.0.7", 29400)
    assert args.nproc_per_node == "4" and args.rdzv_backend == "static" and args.max_restarts == 0
    assert args.no_python and args.training_script == "segrepro" and args.training_script_args[0] == "train"


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf"])
def test_bad_collective_timeout_is_one_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from segrepro.engine.distributed import collective_timeout
    from segrepro.errors import UserError

    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(UserError, match=f"{TIMEOUT_ENV}=.*in seconds") as err:
        collective_timeout()
    assert err.value.exit_code == 2
    monkeypatch.setenv(TIMEOUT_ENV, "90")
    assert collective_timeout().total_seconds() == 90


def test_two_nodes_train_like_one_process(cityscapes: Path, tmp_path: Path) -> None:  # noqa: F811
    """Same global batch (2 nodes x 2 images vs 1 process accumulating 2 x 2): the same parameters; one
    checkpoint folder and one MLflow run, both from rank 0."""
    import mlflow

    nodes = (tmp_path / "node0", tmp_path / "node1")
    single = tmp_path / "single"
    for folder in (*nodes, single):
        _params(folder)
    with mlflow_server(tmp_path / "mlflow") as url:
        base = _env(tmp_path, tracking=url)
        segrepro_part = train_command(METHOD, RECIPE, 1, str(cityscapes), "run")
        segrepro_part = segrepro_part[segrepro_part.index("--no-python") + 1 :]
        res = subprocess.run(
            segrepro_part,
            cwd=single,
            env={**base, "PATH": _node_env(base, 0, 0)["PATH"]},
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        with _two_nodes(base, cityscapes, nodes) as procs:
            codes = [proc.wait(timeout=NODE_TIMEOUT_S) for proc in procs]
        logs = [(node / "node.log").read_text() for node in nodes]
        assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)

        # rank 1 wrote nothing on its node: no checkpoint, no model, no log, no summary
        assert [p for p in (nodes[1] / "run").rglob("*") if p.is_file()] == []
        assert (nodes[0] / "run" / "model.pt").is_file() and (nodes[0] / "run" / "train_summary.json").is_file()
        assert _losses(nodes[0] / "run") == pytest.approx(_losses(single / "run"), rel=1e-4, abs=1e-5)
        two, one = _weights(nodes[0] / "run"), _weights(single / "run")
        assert two.keys() == one.keys()
        params = [k for k in one if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert all(torch.allclose(two[k], one[k], rtol=1e-4, atol=1e-5) for k in params)
        # BatchNorm statistics are per rank under gloo (CPU: no SyncBatchNorm) and rank 0's are saved: one update
        # per iteration over its 2 images, where the single process updates twice (once per accumulated batch).
        tracked = next(k for k in one if k.endswith("num_batches_tracked"))
        assert int(one[tracked]) == 2 * int(two[tracked]) == 2 * 6

        client = mlflow.MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("segrepro-cityscapes").experiment_id])
        assert sorted(r.data.tags["world_size"] for r in runs) == ["1", "2"]  # one run per training, not per rank


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["dies", "hangs"])
def test_a_lost_node_fails_the_job(cityscapes: Path, tmp_path: Path, sig: signal.Signals) -> None:  # noqa: F811
    """Node 1 killed (its connections close) or frozen (they stay open) mid-run: node 0 exits non-zero on its
    own, saying why, at once or after the collective timeout the job sets, never waiting for node 1 forever."""
    nodes = (tmp_path / "node0", tmp_path / "node1")
    for node in nodes:
        _params(node, iterations=10_000)  # far more than can run before node 1 goes
    base = {**_env(tmp_path), TIMEOUT_ENV: "60"}  # the frozen case's bound; the default is 30 minutes
    with _two_nodes(base, cityscapes, nodes) as (node0, node1):
        checkpoint = nodes[0] / "run" / "checkpoints" / "iter_00000002.pt"
        deadline = time.monotonic() + NODE_TIMEOUT_S
        while not checkpoint.exists() and node0.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert checkpoint.exists(), (nodes[0] / "node.log").read_text()[-3000:]
        _signal_node(node1.pid, sig)
        code = node0.wait(timeout=NODE_TIMEOUT_S)
    log = (nodes[0] / "node.log").read_text()
    assert code != 0, log[-3000:]
    errors = [line for line in log.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 0 of 2: another process of the job is gone" in errors[0], log[-3000:]
    assert "[rank0]: Traceback" not in log  # the worker's one line (torchrun's own summary follows it)
    assert not (nodes[0] / "run" / "model.pt").exists()
