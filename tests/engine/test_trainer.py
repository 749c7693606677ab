"""The Ray-free Trainer on a linear "detector": accumulation, clipping, LR steps, the non-finite loss check."""
from __future__ import annotations

import copy
import json
import math
import pickle
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from raydet.config.schema import OptimizerConfig
from raydet.engine.trainer import NonFiniteLossError, StepResult, Trainer

CPU = torch.device("cpu")


class LinearDetector(torch.nn.Module):
    """``img [B,4]`` -> ``[B,2]``; the training call returns a mean-reduced loss (no BatchNorm), a small
    weight penalty and a non-loss entry, as a detector's loss dict would."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, img: torch.Tensor, img_metas: list[dict], target: torch.Tensor,
                return_loss: bool = True) -> dict[str, torch.Tensor]:
        error = self.linear(img) - target
        return {"loss_x": (error ** 2).mean(), "loss_reg": 1e-3 * self.linear.weight.pow(2).sum(),
                "mean_error": error.detach().abs().mean()}


def make_batch(size: int, seed: int, target_scale: float = 1.0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"img": torch.randn(size, 4, generator=generator), "img_metas": [{} for _ in range(size)],
            "target": target_scale * torch.randn(size, 2, generator=generator)}


def split(batch: dict, sizes: list[int]) -> list[dict]:
    """``batch`` cut into consecutive batches of ``sizes`` images."""
    parts, start = [], 0
    for size in sizes:
        parts.append({key: value[start:start + size] for key, value in batch.items()})
        start += size
    return parts


def concat(batches: list[dict]) -> dict:
    return {key: torch.cat([b[key] for b in batches]) if key != "img_metas" else sum((b[key] for b in batches), [])
            for key in batches[0]}


def make_trainer(model: torch.nn.Module, lr: float = 0.1, lr_factor=lambda step: 1.0, **settings) -> Trainer:
    """SGD without momentum (an update is ``-lr * grad``) and a per-step LR factor."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    return Trainer(model, optimizer, scheduler, OptimizerConfig(**settings), CPU)


def count_optimizer_steps(trainer: Trainer) -> list[int]:
    """A list that grows by one at every optimizer step."""
    steps: list[int] = []
    trainer.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: steps.append(len(steps)))
    return steps


def parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_accumulate_2_over_two_batches_equals_one_batch_of_twice_the_size():
    torch.manual_seed(0)
    accumulating = LinearDetector()
    whole = copy.deepcopy(accumulating)
    initial = parameters(accumulating)
    batch = make_batch(8, seed=1)
    halves = make_trainer(accumulating, accumulate=2)
    halves_steps = count_optimizer_steps(halves)
    assert halves.run_epoch(split(batch, [4, 4]), epoch=0, iteration=0) == 2
    full = make_trainer(whole, accumulate=1)
    full.run_epoch([batch], epoch=0, iteration=0)
    assert halves_steps == [0]  # one optimizer step for the group of two
    assert halves.scheduler.last_epoch == full.scheduler.last_epoch == 1
    for accumulated, reference in zip(accumulating.parameters(), whole.parameters()):
        assert torch.allclose(accumulated, reference, atol=1e-6)
    assert not torch.allclose(initial[0], accumulating.linear.weight)  # the update is not trivially zero


def test_partial_last_accumulation_group_steps_with_its_own_size():
    """3 batches, accumulate 2: a group of two, then a group of one whose loss is not halved."""
    torch.manual_seed(0)
    model = LinearDetector()
    reference = copy.deepcopy(model)
    batches = split(make_batch(12, seed=2), [4, 4, 4])
    trainer = make_trainer(model, accumulate=2)
    steps = count_optimizer_steps(trainer)
    trainer.run_epoch(batches, epoch=0, iteration=0)
    assert steps == [0, 1] and trainer.scheduler.last_epoch == 2
    make_trainer(reference, accumulate=1).run_epoch([concat(batches[:2]), batches[2]], epoch=0, iteration=0)
    for accumulated, expected in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(accumulated, expected, atol=1e-6)


@pytest.mark.parametrize("max_norm", [None, 0.5])
def test_grad_clip_bounds_the_norm_at_step_time(max_norm):
    torch.manual_seed(0)
    trainer = make_trainer(LinearDetector(), grad_clip=None if max_norm is None else {"max_norm": max_norm})
    norms: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: norms.append(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad)
                                              for p in trainer.model.parameters()])).item()))
    trainer.run_epoch([make_batch(4, seed=3, target_scale=50.0), make_batch(4, seed=4, target_scale=50.0)],
                      epoch=0, iteration=0)
    assert len(norms) == 2
    if max_norm is None:
        assert min(norms) > 5.0  # large enough that clipping at 0.5 must act
    else:
        assert max(norms) <= max_norm * (1 + 1e-5)


@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_non_finite_loss_stops_the_epoch_naming_iteration_and_term(poison):
    torch.manual_seed(0)
    model = LinearDetector()
    trainer = make_trainer(model)
    bad = make_batch(4, seed=5)
    bad["target"][1, 0] = poison
    after_each_step: list[list[torch.Tensor]] = []
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.run_epoch([make_batch(4, seed=6), make_batch(4, seed=7), bad, make_batch(4, seed=8)], epoch=2,
                          iteration=20, after_step=lambda step: after_each_step.append(parameters(model)))
    message = str(raised.value)
    assert "iteration 23 (epoch 3)" in message  # 20 before this epoch, then its third batch; epochs 1-based
    assert f"loss_x={poison}" in message and "loss_reg" not in message
    assert "lr" in message and "grad_clip" in message and "data" in message  # what to do about it
    assert list(raised.value.terms) == ["loss_x"] and raised.value.iteration == 23 and raised.value.epoch == 2
    assert len(after_each_step) == 2  # the bad batch reported no step...
    for param, before in zip(model.parameters(), after_each_step[-1]):
        assert torch.equal(param, before)  # ...and changed no parameter
        assert param.grad is None
    assert str(pickle.loads(pickle.dumps(raised.value))) == message  # Ray ships it from a worker to the driver


def test_scheduler_steps_once_per_optimizer_step():
    """5 batches, accumulate 2: three steps, each reported once with its lr, images and iteration count."""
    torch.manual_seed(0)
    trainer = make_trainer(LinearDetector(), lr=0.1, lr_factor=lambda step: 0.5 ** step, accumulate=2)
    steps = count_optimizer_steps(trainer)
    seen: list[StepResult] = []
    finished = trainer.run_epoch([make_batch(2 + i, seed=10 + i) for i in range(5)], epoch=0, iteration=7,
                                 after_step=seen.append)
    assert steps == [0, 1, 2] and trainer.scheduler.last_epoch == 3 and finished == 12
    assert [step.lr for step in seen] == pytest.approx([0.1, 0.05, 0.025])
    assert [step.iteration for step in seen] == [9, 11, 12]  # an iteration: one batch per worker
    assert [step.num_images for step in seen] == [2 + 3, 4 + 5, 6]
    assert [step.index for step in seen] == [0, 1, 2] and [step.last_of_epoch for step in seen] == [False, False, True]
    assert set(seen[0].losses) == {"loss_x", "loss_reg", "mean_error"}


def test_a_smaller_group_takes_the_same_steps_with_more_batches_each():
    """An epoch planned for 2 workers (accumulate 1: 2 batches a step) trained by 1 worker: the lone rank
    takes both batches of each step (loss halved), so the weights are those of one batch of both halves."""
    from raydet.data.sampling import GlobalBatch, TrainEpoch
    plan = TrainEpoch(torch.arange(24).reshape(6, 4).numpy(), GlobalBatch(reference_workers=2))
    _, steps = plan.share(rank=0, world_size=1)
    batches = [make_batch(4, seed=20 + i) for i in range(6)]
    torch.manual_seed(0)
    alone, together = LinearDetector(), None
    together = copy.deepcopy(alone)
    seen: list[StepResult] = []
    finished = make_trainer(alone).run_epoch(batches, epoch=0, iteration=0, after_step=seen.append, steps=steps)
    make_trainer(together).run_epoch([concat(batches[i:i + 2]) for i in range(0, 6, 2)], epoch=0, iteration=0)
    assert finished == 3 and [step.iteration for step in seen] == [1, 2, 3]  # 2 batches a step: one iteration
    for ours, reference in zip(alone.parameters(), together.parameters()):
        assert torch.allclose(ours, reference, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_to_file(result: dict, rank: int, results_file: str) -> None:
    """Every rank's ``result``, in rank order, written by rank 0 as JSON; then the group is closed."""
    gathered = [None, None]
    dist.all_gather_object(gathered, result)
    if rank == 0:
        with open(results_file, "w") as f:
            json.dump(gathered, f)
    dist.destroy_process_group()


def _accumulate_under_ddp(rank: int, port: int, results_file: str) -> None:
    """Two ranks, accumulate 2 over 4 batches each: count DDP's gradient all-reduces."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(LinearDetector())
    all_reduces: list[int] = []

    def counting_all_reduce(state, bucket):
        all_reduces.append(len(all_reduces))
        return allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting_all_reduce)
    trainer = make_trainer(model, accumulate=2)
    trainer.run_epoch([make_batch(4, seed=100 * rank + i) for i in range(4)], epoch=0, iteration=0)
    weights = [p.detach().tolist() for p in model.parameters()]
    _gather_to_file({"all_reduces": len(all_reduces), "weights": weights}, rank, results_file)


def _uneven_step_under_ddp(rank: int, port: int, results_file: str) -> None:
    """Two ranks share steps of 3 batches (an epoch planned for 3 workers): rank 0 takes 2 of each, rank 1 one."""
    from raydet.data.sampling import GlobalBatch, TrainEpoch
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(LinearDetector())
    plan = TrainEpoch(torch.arange(6).reshape(6, 1).numpy(), GlobalBatch(reference_workers=3))
    positions, steps = plan.share(rank, 2)
    batches = [make_batch(4, seed=30 + int(position)) for position in positions]
    finished = make_trainer(model).run_epoch(batches, epoch=0, iteration=0, steps=steps)
    _gather_to_file({"weights": [p.detach().tolist() for p in model.parameters()], "finished": finished,
                     "batches": len(batches)}, rank, results_file)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_elastic_ranks_with_unequal_shares_of_a_step_follow_the_mean_gradient(tmp_path):
    """2 ranks, steps of 3 batches (2 + 1): the weights equal one process stepping on each step's 3 batches joined."""
    results_file = tmp_path / "uneven.json"
    mp.spawn(_uneven_step_under_ddp, args=(_free_port(), str(results_file)), nprocs=2)
    ranks = json.loads(results_file.read_text())
    assert [r["batches"] for r in ranks] == [4, 2] and [r["finished"] for r in ranks] == [2, 2]
    torch.manual_seed(0)
    reference = LinearDetector()
    joined = [concat([make_batch(4, seed=30 + i) for i in range(start, start + 3)]) for start in (0, 3)]
    make_trainer(reference).run_epoch(joined, epoch=0, iteration=0)
    for ours, expected in zip(ranks[0]["weights"], reference.parameters()):
        assert torch.allclose(torch.tensor(ours), expected.detach(), atol=1e-6)
    assert ranks[0]["weights"] == ranks[1]["weights"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_accumulation_under_ddp_all_reduces_once_per_group(tmp_path):
    """``no_sync`` on the first batch of each group: 4 batches, accumulate 2 -> 2 all-reduces, and the
    ranks stay equal.  (Fresh "spawn" processes: a fork would share this process's Ray connections.)"""
    results_file = tmp_path / "ddp.json"
    mp.spawn(_accumulate_under_ddp, args=(_free_port(), str(results_file)), nprocs=2)
    ranks = json.loads(results_file.read_text())
    assert [r["all_reduces"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"]


def _non_finite_on_one_rank(rank: int, port: int, results_file: str) -> None:
    """Two ranks; only rank 1's third batch has a NaN target: what each rank raised, and where."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    trainer = make_trainer(torch.nn.parallel.DistributedDataParallel(LinearDetector()))
    batches = [make_batch(4, seed=10 * rank + i) for i in range(4)]
    if rank == 1:
        batches[2]["target"][0, 0] = math.nan
    steps: list[int] = []
    try:
        trainer.run_epoch(batches, epoch=0, iteration=0, after_step=lambda step: steps.append(step.iteration))
        outcome = {"raised": None}
    except NonFiniteLossError as err:
        outcome = {"raised": str(err), "iteration": err.iteration, "terms": list(err.terms)}
    outcome["steps"] = steps
    _gather_to_file(outcome, rank, results_file)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_non_finite_loss_on_one_ddp_rank_stops_every_rank_at_that_iteration(tmp_path):
    """The verdict is all-reduced: no rank goes on to wait in a gradient all-reduce the other never joins."""
    results_file = tmp_path / "nan.json"
    mp.spawn(_non_finite_on_one_rank, args=(_free_port(), str(results_file)), nprocs=2)
    rank0, rank1 = json.loads(results_file.read_text())
    assert rank0["steps"] == rank1["steps"] == [1, 2]
    assert rank0["iteration"] == rank1["iteration"] == 3
    assert rank1["terms"] == ["loss_x"] and rank0["terms"] == []
    assert "iteration 3 (epoch 1): on another worker" in rank0["raised"]
