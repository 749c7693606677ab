"""Learning-rate schedule per iteration: linear/constant warm-up, then step or cosine decay.

The ``lr_config`` section, mmdetection's names::

    lr_config: {policy: step, step: [8, 11], gamma: 0.1,
                warmup: linear, warmup_iters: 500, warmup_ratio: 0.001}
"""
from __future__ import annotations

import torch

from ..config.schema import LrConfig


def build_lr_scheduler(optimizer: torch.optim.Optimizer, lr_config: LrConfig, iters_per_epoch: int,
                       max_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per optimizer step; its ``state_dict`` resumes the schedule."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: lr_config.factor(iteration, iters_per_epoch, max_epochs)
    )
