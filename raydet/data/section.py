"""The ``data:`` config section (mmdetection's ``data = dict(...)``, plus the Ray Data knobs)."""
from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")


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
            collates (fewer, larger tasks amortise Ray's per-task overhead).
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
