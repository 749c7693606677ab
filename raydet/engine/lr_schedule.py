"""Learning-rate schedule per iteration: linear/constant warm-up, then step or cosine decay.

The ``lr_config`` section, mmdetection's names::

    lr_config: {policy: step, step: [8, 11], gamma: 0.1,
                warmup: linear, warmup_iters: 500, warmup_ratio: 0.001}
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch


@dataclasses.dataclass
class LrConfig:
    """The ``lr_config`` section.

    Args:
        policy: ``step`` multiplies the lr by ``gamma`` at each epoch in ``step``;
            ``cosine`` anneals it per iteration to ``min_lr_ratio`` by the last one;
            ``fixed`` keeps it.
        step: epochs (1-based, as in mmdetection: ``[8, 11]`` decays after epochs 8 and 11).
        gamma: decay factor of the step policy.
        min_lr_ratio: final lr / base lr of the cosine policy.
        warmup: ``linear`` ramps from ``warmup_ratio`` to 1 over ``warmup_iters``;
            ``constant`` holds ``warmup_ratio``; null disables warm-up.
    """

    policy: Literal["step", "cosine", "fixed"] = "step"
    step: list[int] = dataclasses.field(default_factory=lambda: [8, 11])
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    warmup: Literal["linear", "constant"] | None = "linear"
    warmup_iters: int = 500
    warmup_ratio: float = 0.001

    def factor(self, iteration: int, iters_per_epoch: int, max_epochs: int) -> float:
        """lr / base lr at 0-based ``iteration``."""
        if self.policy == "step":
            epoch = iteration // iters_per_epoch
            regular = self.gamma ** sum(epoch >= s for s in self.step)
        elif self.policy == "cosine":
            progress = iteration / max(1, iters_per_epoch * max_epochs)
            regular = self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2
        else:
            regular = 1.0
        if self.warmup is None or iteration >= self.warmup_iters:
            return regular
        if self.warmup == "constant":
            return regular * self.warmup_ratio
        return regular * (1 - (1 - iteration / self.warmup_iters) * (1 - self.warmup_ratio))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, lr_config: LrConfig, iters_per_epoch: int,
                       max_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per optimizer step; its ``state_dict`` resumes the schedule."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: lr_config.factor(iteration, iters_per_epoch, max_epochs)
    )
