"""Process-group set-up for ``torchrun`` (NCCL on CUDA, gloo on CPU) and the few collectives we need."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from segrepro.errors import UserError
from segrepro.machine import cores


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# How long a collective waits for the other ranks before this rank fails. A dead peer's closed connection fails
# at once; this bounds a peer that hangs or a node that vanishes without closing its connections.
TIMEOUT_ENV = "SEGREPRO_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0  # rank 0's checkpoint writes stall the others meanwhile


def collective_timeout() -> timedelta:
    """``$SEGREPRO_DIST_TIMEOUT_S`` seconds (default 30 minutes); a bad value is a one-line error."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UserError(
            f"{TIMEOUT_ENV}={text!r}: give the collective timeout in seconds, e.g. {TIMEOUT_ENV}=600", exit_code=2
        )
    return timedelta(seconds=seconds)


def env_world_size() -> int:
    """The process count torchrun (or ``launch_local``) started this process in; 1 outside a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def threads_per_process(nproc: int) -> int:
    """Torch threads for each of ``nproc`` processes sharing this machine's cores (at least 1)."""
    return max(1, cores() // nproc)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; otherwise a single process."""
    world = env_world_size()
    timeout = collective_timeout() if world > 1 else None
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    return DistInfo(rank, world, local, dev)


def launch_local(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m segrepro.cli <argv>`` as ``nproc`` DDP processes on this machine and return the exit code.

    The same launcher as ``torchrun --standalone`` (torch's elastic agent, a c10d rendezvous on a free port of
    127.0.0.1, no restarts), called in-process so that a failed rank ends in one line, not the agent's traceback.
    Each process gets ``cores // nproc`` threads unless ``OMP_NUM_THREADS`` is set: on CPU, processes use the
    cores far better than intra-op threads at the demo's sizes.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.2,
    )
    agent_log = logging.getLogger("torch.distributed.elastic")
    level = agent_log.level
    agent_log.setLevel(logging.CRITICAL)  # a failed rank printed its own message; the agent's would repeat it
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "segrepro.cli", *argv)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        if failure.exitcode in (1, 2):  # that rank printed its `error:` line or traceback
            return failure.exitcode
        print(f"error: process {rank} of {nproc} was stopped (exit code {failure.exitcode})", file=sys.stderr)
        return 1
    finally:
        agent_log.setLevel(level)
    return 0


class PeerLost(UserError):
    """Another process of the job stopped (a lost node or a crashed rank): this one stops too, with a clear line,
    instead of a backend traceback; torchrun then fails the job, and a retried task resumes from the checkpoint."""


def lost_peer(err: BaseException, info: DistInfo) -> PeerLost | None:
    """``err`` as a :class:`PeerLost` when it is a collective failing on a vanished peer, else None.

    gloo raises a plain RuntimeError naming its transport ("Connection reset by peer"); NCCL and the c10d
    store raise ``torch.distributed.DistError`` subclasses.
    """
    text = str(err)
    if not info.distributed or not (isinstance(err, dist.DistError) or "gloo" in text or "NCCL" in text):
        return None
    first = text.splitlines()[0] if text else type(err).__name__
    return PeerLost(
        f"rank {info.rank} of {info.world_size}: another process of the job is gone or stopped answering "
        f"({first[:200]}); "
        "check the other nodes' logs; the job's retry resumes from the last checkpoint"
    )


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (used for the per-rank RNG states in checkpoints)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
