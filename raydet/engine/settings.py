"""The plain (non-buildable) sections that drive a training run, mmdetection's names.

Each is a dataclass parsed with ``raydet.registry.build_section``, so unknown
keys and values of the wrong type are reported with file and key path.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RunnerSettings:
    """``runner``: how long to train."""

    max_epochs: int = 12


@dataclasses.dataclass
class EvaluationSettings:
    """``evaluation``: COCO bbox metrics on ``data.val`` every ``interval`` epochs (and after the last)."""

    interval: int = 1
    save_best: str = "bbox_mAP"


@dataclasses.dataclass
class LogSettings:
    """``log_config``: a log line (and MLflow metrics) every ``interval`` iterations on rank 0."""

    interval: int = 50


@dataclasses.dataclass
class ScalingSettings:
    """``scaling``: Ray Train's ScalingConfig and FailureConfig.

    Args:
        num_workers: training workers (one per GPU, or per CPU slot); 0 runs the
            loop in the driver process (quick local debugging, no DDP).
        use_gpu: one GPU per worker.
        resources_per_worker: Ray resources per worker, e.g. ``{CPU: 4, GPU: 1}``.
        max_failures: how many times a failed worker group is restarted from the
            latest checkpoint (-1: forever).
        storage_path: where Ray Train keeps checkpoints (local dir, ``s3://``,
            ``gs://``; shared by all nodes on a multi-node cluster); null:
            ``<work_dir>/ray_results``.
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    max_failures: int = 0
    storage_path: str | None = None
