"""The decode tasks' body, light to import: what a Ray Data pipeline of ``raydet.data.ray_stream`` names.

A stream runner (``raydet.data.stream_runner``) unpickles every pipeline it
runs, and with it the function and arguments of its ``map_batches``.  So the
function lives here, in a module that imports only numpy and Ray, and what
needs torch to unpickle (the split's transforms) travels as one object-store
reference (``DecodeJob``): the runner's process never imports torch or
torchvision (hundreds of MB and seconds of CPU at start-up).  The decode
tasks import the decoding code on their first call (``DECODE_MODULES``, which
a runner's warm-up task imports ahead of the first batch).
"""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Iterator

import numpy as np
import ray

if TYPE_CHECKING:
    from .transforms import Compose

#: What a decode task imports before it can decode (torch and torchvision with them).
DECODE_MODULES = ("raydet.data.decode", "raydet.data.collate")


@dataclasses.dataclass(frozen=True)
class DecodeJob:
    """What every decode task of one pass shares, besides its rows: put in the object store once per pass.

    Attributes:
        records_ref: the split's records table (``raydet.data.shared_records``).
        plan: ``[steps, batch_size]`` record indices (``-1`` = empty slot).
        seeds: ``[steps, batch_size]`` augmentation seeds.
        pipeline: the split's transforms after decoding.
        size_divisor: the padding multiple of a collated batch.
        with_gt: include the ground truth (training) or not (evaluation).
    """

    records_ref: ray.ObjectRef
    plan: np.ndarray
    seeds: np.ndarray
    pipeline: "Compose"
    size_divisor: int
    with_gt: bool


def run_decode_task(rows: dict[str, np.ndarray], bounds: np.ndarray,
                    job_ref: ray.ObjectRef) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data task body: decode task ``rows["id"]`` -> the packed, collated batches of its planned steps
    ``bounds[id] .. bounds[id + 1] - 1``, one row each, with the images skipped while decoding."""
    from .collate import pack_batch
    from .decode import decode_planned_batch

    (task,) = rows["id"]
    job: DecodeJob = ray.get(job_ref)
    records = ray.get(job.records_ref)
    for step in range(bounds[task], bounds[task + 1]):
        batch, problems = decode_planned_batch(records, job.plan[step], job.seeds[step], job.pipeline,
                                               job.size_divisor, job.with_gt)
        packed = pack_batch(batch)
        packed["step"] = np.int64(step)
        packed["problems"] = np.array(json.dumps(problems.to_dict()))
        yield {key: np.expand_dims(value, 0) for key, value in packed.items()}
