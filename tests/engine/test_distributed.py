"""The loop's collectives on a real two-process gloo group (no Ray: torch's own launcher)."""
from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raydet.engine.distributed import broadcast_buffers, gather_to_rank_zero
from raydet.engine.train_loop import replica_digest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_ddp_step(rank: int, port: int, results_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
    torch.manual_seed(100 + rank)  # each rank its own batch
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    after_step = gather_to_rank_zero([replica_digest(model)])
    broadcast_buffers(model.module)
    after_broadcast = gather_to_rank_zero([replica_digest(model)])
    if rank == 0:
        with open(results_file, "w") as f:
            json.dump({"after_step": after_step, "after_broadcast": after_broadcast}, f)
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_buffers_differ_after_a_ddp_step_until_broadcast(tmp_path):
    """DDP keeps parameters equal, but each rank's BatchNorm statistics follow its own batch:
    the digest (parameters and buffers) sees that, and ``broadcast_buffers`` makes the replicas equal.
    (Fresh "spawn" processes only: a fork of this process would share its Ray session's connections.)"""
    results_file = tmp_path / "digests.json"
    mp.spawn(_one_ddp_step, args=(_free_port(), str(results_file)), nprocs=2)
    results = json.loads(results_file.read_text())
    after_step, after_broadcast = results["after_step"], results["after_broadcast"]
    assert len(after_step) == 2 and after_step[0] != after_step[1]
    assert len(after_broadcast) == 2 and after_broadcast[0] == after_broadcast[1]
