"""The config's plain sections, typed: what each key means, its default and its checks.

Every section is a dataclass parsed with ``raydet.registry.build_section``, once
per command, by ``raydet.config.parsed.parse_config``, so an unknown key or a
value of the wrong type is reported with its file and key path.  Nothing here builds objects: the builder
turns a ``Config`` into objects and hands these settings inward to the data
and engine code, which never reads the config itself.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SPLITS = ("train", "val", "test")
#: Iterations between mid-epoch checkpoints of an elastic run (``checkpoint_config.interval_iters: null``): a
#: resize restarts from the latest checkpoint, so it redoes fewer than this many iterations.
DEFAULT_ELASTIC_CHECKPOINT_ITERS = 50
MetricName = Literal["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l",
                     "segm_mAP", "segm_mAP_50", "segm_mAP_75", "segm_mAP_s", "segm_mAP_m", "segm_mAP_l"]


def _at_least(owner: object, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")


@dataclass
class DataSection:
    """``data:`` — batch sizes, where the files are, one dataset node per split, decoding resources.

    Attributes:
        samples_per_gpu: training images per batch on each worker.
        eval_samples_per_gpu: images per batch for ``val`` / ``test``.
        size_divisor: batches are padded to a multiple of this (32 for FPN strides).
        data_root: folder (or URI) that relative ``ann_file`` / ``img_prefix`` are
            joined to; relative itself to the driver's working directory; empty
            means that directory.  Paths are made absolute on the driver because
            Ray workers run in another working directory.
        train, val, test: dataset nodes (``type: CocoDataset``, ``ann_file``,
            ``img_prefix``, ``pipeline``, …).
        decode_num_cpus: CPUs each Ray Data decode+augment task reserves.
        batches_per_task: planned batches one decode task reads, transforms and
            collates (fewer, larger tasks amortise Ray's per-task overhead); a
            pass's first tasks take 1, 2, 4, … so its first batch comes soon.
        decode_concurrency: at most this many decode tasks at once per training
            worker (default: as many as the free CPUs allow; Ray Data's
            backpressure bounds how far decoding runs ahead of training).
    """

    samples_per_gpu: int = 2
    eval_samples_per_gpu: int = 1
    size_divisor: int = 32
    data_root: str = ""
    train: dict | None = None
    val: dict | None = None
    test: dict | None = None
    decode_num_cpus: float = 1.0
    batches_per_task: int = 8
    decode_concurrency: int | None = None

    def __post_init__(self) -> None:
        for name in ("samples_per_gpu", "eval_samples_per_gpu", "size_divisor", "batches_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.decode_num_cpus <= 0:
            raise ValueError(f"decode_num_cpus must be positive, got {self.decode_num_cpus}")
        if self.decode_concurrency is not None and self.decode_concurrency < 1:
            raise ValueError(f"decode_concurrency must be at least 1, got {self.decode_concurrency}")

    def split(self, name: str) -> dict | None:
        return getattr(self, name)


@dataclasses.dataclass
class GradClip:
    """``torch.nn.utils.clip_grad_norm_`` settings."""

    max_norm: float
    norm_type: float = 2.0


@dataclasses.dataclass
class OptimizerConfig:
    """The ``optimizer_config`` section.

    Args:
        grad_clip: clip the global gradient norm before each step (null: no clipping).
        accumulate: gradient accumulation — step the optimizer every N batches.
        amp: mixed precision (``torch.autocast`` + ``GradScaler``) when training on GPU;
            ignored on CPU.
        norm_decay_mult: weight-decay multiplier for norm-layer weights and biases (null: 1).
        bias_decay_mult: weight-decay multiplier for all other biases (null: 1).
    """

    grad_clip: dict | None = None
    accumulate: int = 1
    amp: bool = True
    norm_decay_mult: float | None = None
    bias_decay_mult: float | None = None

    def __post_init__(self) -> None:
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.accumulate}")
        if self.grad_clip is not None:
            keys = set(self.grad_clip)
            if "max_norm" not in keys or not keys <= {"max_norm", "norm_type"}:
                raise ValueError(f"grad_clip takes max_norm (required) and norm_type, got {sorted(keys)}")
            self.grad_clip = GradClip(**self.grad_clip)  # type: ignore[arg-type]


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
            loop in the driver process (quick local debugging, no DDP).  ``[MIN, MAX]``:
            an elastic group, as many workers as the cluster holds between the two;
            Ray Train restarts it at a new size from the latest checkpoint when nodes
            come or go.  The global batch is ``MAX × samples_per_gpu ×
            optimizer_config.accumulate`` at any size (a smaller group accumulates).
        resize_check_interval_s: an elastic group looks for more room this often
            (Ray Train's ``elastic_resize_monitor_interval_s``; its default is 60 s).
        health_check_interval_s: how often Ray Train's controller polls the workers
            (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, unless that is set): a lost node is
            noticed within it.
        use_gpu: one GPU per worker.
        resources_per_worker: Ray resources per worker, e.g. ``{CPU: 4, GPU: 1}``.
        max_failures: how many times a failed worker group is restarted from the
            latest checkpoint (-1: forever).
        max_preemption_failures: the same for workers lost to a node preemption that
            Ray was told of (a spot reclaim drained by the autoscaler), counted apart
            from ``max_failures`` (-1, the default: forever).
        storage_path: where Ray Train keeps checkpoints (local dir, ``s3://``,
            ``gs://``; shared by all nodes on a multi-node cluster); null:
            ``<work_dir>/ray_results``.
    """

    num_workers: int | tuple[int, int] = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    max_failures: int = 0
    max_preemption_failures: int = -1
    storage_path: str | None = None
    resize_check_interval_s: float = 30.0
    health_check_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, (list, tuple)):
            low, high = self.num_workers = tuple(self.num_workers)
            if low < 1:
                raise ValueError(f"num_workers [{low}, {high}]: a range needs at least 1 worker (0 runs the loop in "
                                 "the driver, without a worker group to resize)")
            if low > high:
                raise ValueError(f"num_workers [{low}, {high}]: the minimum is above the maximum; write [MIN, MAX]")
        else:
            _at_least(self, 0, "num_workers")
        for name in ("resize_check_interval_s", "health_check_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be above 0, got {getattr(self, name)}")
        _at_least(self, -1, "max_failures")
        _at_least(self, -1, "max_preemption_failures")
        if (self.resources_per_worker or {}).get("GPU") and not self.use_gpu:
            raise ValueError("resources_per_worker asks for GPUs: set use_gpu: true (or --use-gpu)")

    @property
    def elastic(self) -> bool:
        """Whether the workers are a range (``[MIN, MAX]``)."""
        return isinstance(self.num_workers, tuple)

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if self.elastic else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if self.elastic else self.num_workers


@dataclasses.dataclass
class MlflowSettings:
    """The ``mlflow`` section.

    Args:
        tracking_uri: where runs are stored (null: ``MLFLOW_TRACKING_URI``, else
            ``sqlite:///<work_dir>/mlflow.db``).
        experiment_name: the MLflow experiment (created when missing).
        run_name: the run's name (null: the work directory's name).
        num_images: how many val images the predictions picture shows.
        log_model: at the end of the run, log its best checkpoint as an MLflow model of the run (a raydet
            pyfunc: ``raydet.engine.mlflow_models``).
        registered_model_name: also register that model as a new version of this registered model.
        alias: and point this alias of the registered model (e.g. ``champion``) at the new version.
    """

    tracking_uri: str | None = None
    experiment_name: str = "raydet"
    run_name: str | None = None
    num_images: int = 4
    log_model: bool = True
    registered_model_name: str | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.num_images < 0:
            raise ValueError(f"num_images must be at least 0, got {self.num_images}")
        if self.registered_model_name is not None and not self.registered_model_name.strip():
            raise ValueError("registered_model_name must not be empty (null: the model is not registered)")
        if self.alias is not None and not self.registered_model_name:
            raise ValueError(f"alias {self.alias!r} needs registered_model_name: an alias names a version of a "
                             "registered model")
        if self.registered_model_name and not self.log_model:
            raise ValueError("registered_model_name needs log_model: true (the registered version is the logged "
                             "model)")

    def resolved_uri(self, work_dir: Path) -> tuple[str, str | None]:
        """``(tracking_uri, artifact_location)``; artifacts sit beside a default sqlite store."""
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return uri, None
        work_dir = work_dir.resolve()
        return f"sqlite:///{work_dir / 'mlflow.db'}", (work_dir / "mlartifacts").as_uri()


@dataclasses.dataclass
class CheckpointSettings:
    """The ``checkpoint_config`` section.

    Args:
        interval: save every N epochs (the last epoch is always saved).
        interval_iters: also save every N iterations within an epoch, so a restart (a lost
            node, an elastic resize) redoes at most N iterations; null: every
            ``DEFAULT_ELASTIC_CHECKPOINT_ITERS`` when ``scaling.num_workers`` is a range, else
            never; 0: never.
        max_keep_ckpts: how many checkpoints Ray Train keeps: the best by
            ``evaluation.save_best`` (the most recent without ``data.val``), plus
            always the latest (null: keep all).
    """

    interval: int = 1
    max_keep_ckpts: int | None = 3
    interval_iters: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("interval", self.interval), ("max_keep_ckpts", self.max_keep_ckpts)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        _at_least(self, 0, "interval_iters")

    def iterations_between_checkpoints(self, elastic: bool) -> int:
        """``interval_iters`` resolved: 0 for never."""
        if self.interval_iters is not None:
            return self.interval_iters
        return DEFAULT_ELASTIC_CHECKPOINT_ITERS if elastic else 0


@dataclasses.dataclass
class AccelSettings:
    """``accel``: CPU speed paths the engine applies to the built model (``raydet.accel``); all off by default.

    Each computes the model's function up to rounding, faster on a CPU, and keeps its
    parameters and state_dict (checkpoints are the same either way).  A path changes
    only what the model has (``fold_norm`` a ResNet's norms, ``gather_roi_align`` RoI
    extractors).  Training and evaluation (``raydet.train``, ``raydet.test``,
    ``raydet.infer``) all apply them.

    Args:
        winograd: 3x3 stride-1 convolutions of float32 CPU tensors run as Winograd
            F(m x m, 3x3) where they gain (maps of 24x24 or more with 128+ input
            channels; 12x12 with 256+ when no gradient is needed, as F(2x2)), forward
            and backward.  ``4``: about 2x as fast there, about 3x a direct
            convolution's rounding error; ``2``: about 1.4x, as accurate as a direct
            convolution; ``0``: off.
        fold_norm: each convolution of a ResNet and the BatchNorm after it as one
            convolution whenever the norm normalises with constants (``FrozenBN``
            always, ``BN`` in eval mode).
        gather_roi_align: the RoI extractors' RoIAlign (``sampling_ratio > 0``, on the
            CPU) as one weighted gather over the feature map: torchvision's sample
            points and weights, vectorised over the channels (forward + backward
            about 4x faster than torchvision's CPU kernel).
        channels_last: in eval mode on the CPU, the image and so the feature maps are
            laid out channels-last (oneDNN's faster layout for inference).
    """

    winograd: Literal[0, 2, 4] = 0
    fold_norm: bool = False
    gather_roi_align: bool = False
    channels_last: bool = False


# Plain top-level sections -> their dataclass (defaults when absent).
SECTIONS: dict[str, type] = {
    "optimizer_config": OptimizerConfig,
    "lr_config": LrConfig,
    "runner": RunnerSettings,
    "evaluation": EvaluationSettings,
    "checkpoint_config": CheckpointSettings,
    "log_config": LogSettings,
    "scaling": ScalingSettings,
    "mlflow": MlflowSettings,
    "accel": AccelSettings,
}

# Top-level keys a config may have, and what each one is.
TOP_LEVEL_KEYS = {
    "custom_imports": "modules to import so their registered components exist",
    "seed": "random seed: model initialisation, data order and augmentation",
    "model": "the detector (MODELS)",
    "data": "datasets and their pipelines (DATASETS, TRANSFORMS), batch sizes, decoding resources",
    "optimizer": "the torch optimizer (OPTIMIZERS), e.g. {type: SGD, lr: 0.02, momentum: 0.9}",
    **{key: section.__doc__.splitlines()[0] for key, section in SECTIONS.items()},
}
