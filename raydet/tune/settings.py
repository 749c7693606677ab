"""The ``tune:`` section of a sweep file, typed: what to optimise, how to search, what each trial gets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..evaluation.coco_metric import METRIC_NAMES, SEGM_METRIC_NAMES

#: What a training run reports to Tune after an epoch: its mean training loss (every epoch the
#: run reports) and the COCO metrics on ``data.val`` (every evaluation; ``segm_*`` from mask detectors).
REPORTED_METRICS = (*METRIC_NAMES, *SEGM_METRIC_NAMES, "loss")


@dataclass
class SchedulerSettings:
    """``tune.scheduler``: ASHA (asynchronous successive halving) by epochs.

    Args:
        type: ``ASHA``, or ``none`` to run every trial to the end.
        grace_period: epochs every trial runs before it may be stopped.
        reduction_factor: at each rung (grace_period x reduction_factor^k epochs) only the best
            1/reduction_factor of the trials that reached it go on.
    """

    type: Literal["ASHA", "none"] = "ASHA"
    grace_period: int = 1
    reduction_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.grace_period < 1:
            raise ValueError(f"grace_period must be at least 1, got {self.grace_period}")
        if self.reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be above 1, got {self.reduction_factor}")


@dataclass
class TrialSettings:
    """``tune.trial``: each trial's Ray Train workers; set keys replace the config's ``scaling``
    (``num_workers: [MIN, MAX]``: each trial an elastic group)."""

    num_workers: int | tuple[int, int] | None = None
    resources_per_worker: dict[str, float] | None = None
    use_gpu: bool | None = None


@dataclass
class TuneSettings:
    """``tune``: the sweep's settings.

    Args:
        metric: what to optimise, one of ``REPORTED_METRICS``.
        mode: ``max`` or ``min``.
        num_samples: trials to sample (with ``grid`` dimensions: repeats of the whole grid).
        scheduler: a ``SchedulerSettings`` mapping; null or ``none``: no early stopping.
        searcher: ``random`` (grids enumerated, the rest sampled), ``grid`` (only
            ``choice`` / ``grid`` dimensions, every combination) or ``optuna`` (TPE;
            ``pip install 'raydet[optuna]'``).
        max_concurrent_trials: trials at once; null: as many as the cluster's resources fit.
        trial: a ``TrialSettings`` mapping.
        seed: the searcher's seed (null: a different draw each sweep).
    """

    metric: str = "bbox_mAP"
    mode: Literal["max", "min"] = "max"
    num_samples: int = 1
    scheduler: dict | str | None = None
    searcher: Literal["random", "grid", "optuna"] = "random"
    max_concurrent_trials: int | None = None
    trial: dict | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in REPORTED_METRICS:
            raise ValueError(f"metric {self.metric!r} is never reported by training; "
                             f"choose one of {', '.join(REPORTED_METRICS)}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {self.num_samples}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(f"max_concurrent_trials must be at least 1 (or null), got {self.max_concurrent_trials}")
