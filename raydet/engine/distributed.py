"""The few collectives the loop needs beyond DDP's own (a no-op without a process group)."""
from __future__ import annotations

from typing import Any

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
