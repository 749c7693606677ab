"""The driver side of the Ray data edge: each split's records in the object store, for every worker.

::

    datasets = raydet.builder.build_datasets(config)                   # reads + checks annotations
    records, summary = share_records(datasets, samples_per_gpu)        # {split: ObjectRef of its records}
    trainer = TorchTrainer(train_loop, train_loop_config={... records ...}, ...)
    mlflow.log_metrics(summary.metrics())                              # counts, problems per kind

The records (a small ``pyarrow`` table: paths and boxes, no pixels) are put in
the object store once; every worker reads all of them and plans its own
batches (``raydet.data.ray_stream`` says why), then Ray Data decodes them.
They are not handed to Ray Train as Ray Datasets: that would start Ray Train's
``DatasetManager`` actor and a Ray Data execution in every worker only to
copy a table each worker reads whole (seconds of a worker group's start).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import ray

from .datasets import DetectionDataset
from .problems import ProblemReport
from .sampling import aspect_groups, train_steps_per_epoch


@dataclass
class SplitSummary:
    """What was read for one split: counts, classes, problems."""

    split: str
    dataset_type: str
    ann_file: str
    description: str
    num_images: int
    classes: list[str]
    cat_ids: list[int]
    group_sizes: list[int]
    problems: ProblemReport


@dataclass
class DataSummary:
    """Returned by ``share_records``: printed once at the start, loggable as metrics."""

    splits: dict[str, SplitSummary] = field(default_factory=dict)
    samples_per_gpu: int = 2

    def lines(self) -> list[str]:
        lines = []
        for summary in self.splits.values():
            lines.append(f"data.{summary.split}: {summary.dataset_type} {summary.ann_file}: {summary.description}")
            lines.extend(f"    {line}" for line in summary.problems.lines())
        return lines

    def metrics(self) -> dict[str, int]:
        """Flat counts: ``data/train/images``, ``data/train/problems/invalid_box``, …"""
        metrics = {}
        for summary in self.splits.values():
            metrics[f"data/{summary.split}/images"] = summary.num_images
            metrics.update({f"data/{summary.split}/problems/{kind}": n for kind, n in summary.problems.counts.items()})
        return metrics

    def train_steps_per_epoch(self, world_size: int) -> int:
        """Batches per worker per epoch with ``world_size`` workers (what ``len(iter_train_batches(...))`` will be)."""
        groups = np.repeat(np.arange(len(self.splits["train"].group_sizes)), self.splits["train"].group_sizes)
        return train_steps_per_epoch(groups, self.samples_per_gpu, world_size)


def share_records(datasets: dict[str, DetectionDataset], samples_per_gpu: int, verbose: bool = True,
                  ) -> tuple[dict[str, ray.ObjectRef], DataSummary]:
    """Put each split's records (read on the driver by ``raydet.builder.build_datasets``) in the object store.

    Args:
        datasets: split name -> its dataset.
        samples_per_gpu: training images per batch on each worker (for the summary's step counts).
        verbose: print the summary (one line per split, then each problem kind
            with examples).

    Returns:
        ``records`` (split name -> ObjectRef of its records table, one row per image, by ``image_id``) and the
        ``DataSummary``.
    """
    records, summary = {}, DataSummary(samples_per_gpu=samples_per_gpu)
    for split, dataset in datasets.items():
        table = dataset.table().sort_by("image_id")
        records[split] = ray.put(table)
        groups = aspect_groups(table["height"].to_numpy(), table["width"].to_numpy())
        summary.splits[split] = SplitSummary(
            split=split, dataset_type=type(dataset).__name__, ann_file=dataset.ann_file, description=dataset.summary(),
            num_images=len(dataset), classes=dataset.classes, cat_ids=dataset.cat_ids,
            group_sizes=np.bincount(groups, minlength=2).tolist(), problems=dataset.problems,
        )
    if verbose:
        print("\n".join(summary.lines()), flush=True)
    return records, summary
