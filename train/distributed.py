"""Process group setup/teardown and device choice: the only place that knows how ranks are made.

Three ways a training process starts, one result (`DistEnv`):
- plain `python`/`vipstream train` without --nproc: one process, no process group;
- torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` in the environment): we create the
  group (nccl on CUDA, gloo on CPU) and destroy it at the end;
- Ray Train's TorchTrainer: the group already exists (Ray made it); we use it and leave it alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def choose_device(local_rank: int = 0) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def setup_distributed(timeout_s: float = 1800.0, device: torch.device | None = None) -> DistEnv:
    """Join (or create) the process group this process was started for; see the module docstring."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():  # Ray Train (or a caller) made the group
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device or choose_device(local_rank),
                       owns_group=False)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(0, 1, 0, device or choose_device(0), owns_group=False)
    device = device or choose_device(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group=True)


def teardown_distributed(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable, in memory only), in rank order."""
    if not env.distributed:
        return [obj]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(env: DistEnv, obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_over_ranks(env: DistEnv, values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of a float tensor over ranks (identity on one process)."""
    if not env.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / env.world_size


def sum_over_ranks(env: DistEnv, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of a tensor over ranks (identity on one process)."""
    if not env.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
