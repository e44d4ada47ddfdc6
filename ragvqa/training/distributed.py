"""Processes of a training run: one, or several launched by ``torchrun``.

``torchrun --nproc_per_node N -m ragvqa train ...`` sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous address; :func:`setup` then joins the process
group (NCCL when training on CUDA, gloo on CPU) and makes a second group of
the same backend for the embedding gather inside the loss, so that collective
never interleaves with DDP's own gradient all-reduces.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ragvqa.errors import InputError

logger = logging.getLogger(__name__)

# Rank 0 evaluates and writes checkpoints while the others wait at a barrier.
BARRIER_TIMEOUT = _dt.timedelta(hours=2)


@dataclass
class DistEnv:
    """Where this process stands: rank, world size, device, and the gather group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    gather_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU when CUDA is available, else the CPU."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preference)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda but no CUDA GPU is visible", hint="use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup(device_preference: str = "auto") -> DistEnv:
    """Join the torchrun process group if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    env = DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
        env.gather_group = dist.new_group(backend=backend, timeout=BARRIER_TIMEOUT)
        logger.info("process %d of %d on %s (%s)", rank, world, device, backend)
    return env


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def mean_over_processes(values: list[float], env: DistEnv) -> list[float]:
    """Element-wise mean of a few floats over all processes (identity for one)."""
    if not env.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / env.world_size).tolist()


def sum_over_processes(values: list[float], env: DistEnv) -> list[float]:
    if not env.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's ``obj`` in rank order (a list of one for one process)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
