"""Optimizer construction (parameter-wise weight decay) and the per-iteration LR schedule."""
from __future__ import annotations

import math

import pytest
import torch

from raydet.config.schema import LrConfig, OptimizerConfig
from raydet.engine.lr_schedule import build_lr_scheduler
from raydet.optimizers import build_optimizer
from raydet.registry import BuildError


def small_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 2, 1, bias=True), torch.nn.GroupNorm(1, 2))


def test_no_decay_on_norms_and_biases_when_asked():
    net = small_net()
    optimizer = build_optimizer(net, {"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1.0e-4},
                                OptimizerConfig(norm_decay_mult=0.0, bias_decay_mult=0.0))
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay_of[id(net[0].weight)] == decay_of[id(net[3].weight)] == 1.0e-4
    for param in (net[0].bias, net[3].bias, net[1].weight, net[1].bias, net[4].weight, net[4].bias):
        assert decay_of[id(param)] == 0.0
    assert len(decay_of) == sum(1 for _ in net.parameters())


def test_default_decays_everything_and_skips_frozen_parameters():
    net = small_net()
    net[0].weight.requires_grad_(False)
    optimizer = build_optimizer(net, {"type": "AdamW", "lr": 1.0e-3, "weight_decay": 0.05}, OptimizerConfig())
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05]
    assert all(p is not net[0].weight for p in optimizer.param_groups[0]["params"])
    assert len(optimizer.param_groups[0]["params"]) == sum(1 for p in net.parameters() if p.requires_grad) == 7
    assert isinstance(optimizer, torch.optim.AdamW)


def test_bad_optimizer_argument_names_the_key():
    with pytest.raises(BuildError,
                       match=r"optimizer.momentm: SGD has no argument 'momentm' \(did you mean 'momentum'\?\)"):
        build_optimizer(small_net(), {"type": "SGD", "lr": 0.1, "momentm": 0.9}, OptimizerConfig())


def test_step_schedule_with_linear_warmup_matches_mmdetection():
    cfg = LrConfig(policy="step", step=[2, 3], gamma=0.1, warmup="linear", warmup_iters=10, warmup_ratio=0.001)
    per_epoch = 10
    assert cfg.factor(0, per_epoch, 4) == pytest.approx(0.001)
    assert cfg.factor(5, per_epoch, 4) == pytest.approx(1 - 0.5 * 0.999)
    assert cfg.factor(10, per_epoch, 4) == 1.0
    assert cfg.factor(19, per_epoch, 4) == 1.0
    assert cfg.factor(20, per_epoch, 4) == pytest.approx(0.1)  # after epoch 2
    assert cfg.factor(30, per_epoch, 4) == pytest.approx(0.01)  # after epoch 3


def test_cosine_schedule_ends_at_min_ratio():
    cfg = LrConfig(policy="cosine", warmup=None, min_lr_ratio=0.05)
    assert cfg.factor(0, 10, 2) == 1.0
    assert cfg.factor(10, 10, 2) == pytest.approx(0.05 + 0.95 * (1 + math.cos(math.pi / 2)) / 2)
    assert cfg.factor(20, 10, 2) == pytest.approx(0.05)


def test_scheduler_state_resumes_the_same_lrs():
    def lrs(resume_at: int | None) -> list[float]:
        net = small_net()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
        cfg = LrConfig(step=[1], warmup_iters=3)
        scheduler = build_lr_scheduler(optimizer, cfg, iters_per_epoch=4, max_epochs=2)
        seen = []
        for i in range(8):
            if i == resume_at:  # a fresh optimizer + scheduler restored from state dicts
                state = (optimizer.state_dict(), scheduler.state_dict())
                optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
                scheduler = build_lr_scheduler(optimizer, cfg, iters_per_epoch=4, max_epochs=2)
                optimizer.load_state_dict(state[0])
                scheduler.load_state_dict(state[1])
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen

    straight = lrs(None)
    assert straight == lrs(5)
    assert straight[0] == pytest.approx(0.2 * 0.001) and straight[4] == pytest.approx(0.02)
