"""torchrun set-up and the collective ops the tasks need, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn as dist_nn
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); single process otherwise.

    Uses NCCL when CUDA is available, gloo on CPU.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def get_info() -> DistInfo:
    if not is_distributed():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if is_distributed():
        dist.barrier()


def batch_shards(num_items: int, batch_size: int, seed: int) -> list[list[int]]:
    """This rank's share of every global batch of a seeded shuffle of ``range(num_items)``: global batch b is
    positions [b*B, (b+1)*B) of one permutation and rank r takes every W-th of them from the r-th, so any number of
    processes trains on the same global batches (a share may be empty when a batch has fewer items than ranks)."""
    info = get_info()
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[start:start + batch_size][info.rank::info.world_size] for start in range(0, num_items, batch_size)]


def gather_rows(local: Tensor, total: int) -> Tensor:
    """Rows that rank r computed for positions r, r+W, r+2W, ... back in position order (identity on one process)."""
    if not is_distributed():
        return local
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    out = torch.empty(total, *local.shape[1:], dtype=local.dtype)
    for rank, part in enumerate(parts):
        out[rank::len(parts)] = part
    return out


def print0(*args, **kwargs) -> None:
    """print on rank 0 only."""
    if get_info().is_main:
        print(*args, **kwargs)


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (B, ...) from every rank in rank order, differentiably; identity on one process."""
    if not is_distributed():
        return tensor
    return torch.cat(dist_nn.all_gather(tensor), dim=0)


def gather_objects(local: Any) -> list[Any]:
    """``local`` of every rank, in rank order (``[local]`` on one process)."""
    if not is_distributed():
        return [local]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return parts


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """The elementwise sum of ``tensor`` over every rank (a new tensor; ``tensor`` itself on one process)."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def mean_over_ranks(tensor: Tensor) -> Tensor:
    """The elementwise mean of ``tensor`` over every rank (``tensor`` itself on one process)."""
    return sum_over_ranks(tensor) / get_info().world_size if is_distributed() else tensor


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` on one process)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
