"""The few collectives the loop needs beyond DDP's own (a no-op without a process group)."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_to_rank_zero(items: list) -> list:
    """All ranks' lists concatenated on rank 0; the local list elsewhere (and without a process group)."""
    if not is_distributed():
        return items
    gathered: list[list[Any]] | None = [[] for _ in range(dist.get_world_size())] if dist.get_rank() == 0 else None
    dist.gather_object(items, gathered, dst=0)
    return [item for part in gathered for item in part] if gathered is not None else items


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers before each training forward, so after an epoch's
    last forward every rank holds statistics updated by its own batch;
    evaluation and checkpoints must all use the one set the checkpoint keeps.
    """
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def mean_over_workers(value: torch.Tensor) -> float:
    """The mean of a scalar tensor over all ranks (its own value without a process group)."""
    if not is_distributed():
        return float(value)
    value = value.detach().float().reshape(1).clone()
    dist.all_reduce(value)
    return float(value) / dist.get_world_size()


def sum_over_workers(value: int) -> int:
    """The sum of an integer over all ranks (its own value without a process group)."""
    if not is_distributed():
        return value
    total = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return int(total.item())
