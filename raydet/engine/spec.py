"""What a training worker receives: built objects and typed settings, never the config itself.

The launcher builds a ``TrainingSpec`` on the driver (through ``raydet.builder``,
the only reader of a ``Config``) and Ray Train ships it to every worker.  The
model and the optimizer are built on each worker — after seeding, so every
replica starts from the same weights — by the two factories it carries; each
holds only its own config node and hands it to the builder there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config.schema import (
    AccelSettings,
    CheckpointSettings,
    EvaluationSettings,
    LogSettings,
    LrConfig,
    OptimizerConfig,
    RunnerSettings,
)
from ..data.datasets import DetectionDataset
from ..data.decode import BatchRecipe
from ..data.sampling import GlobalBatch


@dataclass
class TrainingSpec:
    """Everything ``train_loop_per_worker`` needs.

    Attributes:
        config_yaml: the resolved config, saved in every checkpoint (a record of what was trained).
        seed: the config's seed.
        runner / evaluation / checkpoint_config / log_config / optimizer_config / lr_config: the config's
            plain sections, named as their config keys.
        num_pictures: val images drawn with their detections into ``predictions.png``.
        train: how the training split's planned batches are decoded.
        val: the same for ``data.val`` (None: no evaluation).
        val_dataset: ``data.val`` as read on the driver: rank 0's ground truth.
        build_model: ``() -> detector`` (not wrapped, weights not loaded).
        build_optimizer: ``model -> optimizer`` over its trainable parameters.
        accel: the CPU speed paths applied to the built model (``raydet.accel.apply_accel``).
        global_batch: what one optimizer step takes, at any worker count (an elastic run's maximum).
        checkpoint_interval_iters: iterations between mid-epoch checkpoints (0: none).
    """

    config_yaml: str
    seed: int
    runner: RunnerSettings
    evaluation: EvaluationSettings
    checkpoint_config: CheckpointSettings
    log_config: LogSettings
    optimizer_config: OptimizerConfig
    lr_config: LrConfig
    num_pictures: int
    train: BatchRecipe
    val: BatchRecipe | None
    val_dataset: DetectionDataset | None
    build_model: Callable[[], torch.nn.Module]
    build_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]
    accel: AccelSettings
    global_batch: GlobalBatch
    checkpoint_interval_iters: int = 0
