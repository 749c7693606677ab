"""The plain (non-buildable) sections that drive a training run, mmdetection's names.

Each is a dataclass parsed with ``raydet.registry.build_section``, so unknown
keys and values of the wrong type are reported with file and key path.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

MetricName = Literal["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]


def _at_least(owner: object, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")


@dataclasses.dataclass
class RunnerSettings:
    """``runner``: how long to train."""

    max_epochs: int = 12

    def __post_init__(self) -> None:
        _at_least(self, 1, "max_epochs")


@dataclasses.dataclass
class EvaluationSettings:
    """``evaluation``: COCO bbox metrics on ``data.val`` every ``interval`` epochs (and after the last);
    ``save_best`` is the metric that ranks checkpoints."""

    interval: int = 1
    save_best: MetricName = "bbox_mAP"

    def __post_init__(self) -> None:
        _at_least(self, 1, "interval")


@dataclasses.dataclass
class LogSettings:
    """``log_config``: a log line (and MLflow metrics) every ``interval`` iterations on rank 0."""

    interval: int = 50

    def __post_init__(self) -> None:
        _at_least(self, 1, "interval")


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

    def __post_init__(self) -> None:
        _at_least(self, 0, "num_workers")
        _at_least(self, -1, "max_failures")
        if (self.resources_per_worker or {}).get("GPU") and not self.use_gpu:
            raise ValueError("resources_per_worker asks for GPUs: set use_gpu: true (or --use-gpu)")


@dataclasses.dataclass
class MlflowSettings:
    """The ``mlflow`` section.

    Args:
        tracking_uri: where runs are stored (null: ``MLFLOW_TRACKING_URI``, else
            ``sqlite:///<work_dir>/mlflow.db``).
        experiment_name: the MLflow experiment (created when missing).
        run_name: the run's name (null: the work directory's name).
        num_images: how many val images the predictions picture shows.
    """

    tracking_uri: str | None = None
    experiment_name: str = "raydet"
    run_name: str | None = None
    num_images: int = 4

    def __post_init__(self) -> None:
        if self.num_images < 0:
            raise ValueError(f"num_images must be at least 0, got {self.num_images}")

    def resolved_uri(self, work_dir: Path) -> tuple[str, str | None]:
        """``(tracking_uri, artifact_location)``; artifacts sit beside a default sqlite store."""
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return uri, None
        work_dir = work_dir.resolve()
        return f"sqlite:///{work_dir / 'mlflow.db'}", (work_dir / "mlartifacts").as_uri()
