"""The worker side of the Ray data edge: planned batches, decoded + augmented + collated by Ray Data tasks.

The driver puts each split's records in the object store
(``raydet.data.shared_records``) and hands every worker their references and a
``BatchRecipe`` per split (``raydet.builder.batch_recipe``).  In ``train_loop``
(every Ray Train worker)::

    for epoch in range(start_epoch, max_epochs):
        batches = iter_train_batches(train_recipe, records["train"], epoch, global_batch)
        len(batches), batches.steps        # this worker's batches, and the optimizer step each belongs to
        for batch in batches:              # a Batch (raydet.data.collate) of CPU tensors, uint8 pixels
            losses = model(**to_device(batch, device), return_loss=True)   # normalised on the device
    for batch in iter_eval_batches(val_recipe, records["val"]):   # over all workers: every val image once
        results = model(**to_device(batch, device), return_loss=False)

How the guarantees hold.  Ray Data's ``streaming_split`` hands blocks to
whichever worker asks first: it keeps row counts equal but cannot reshuffle
from ``(seed, epoch)``, group by aspect ratio, or say up front how many batches
a worker will get once corrupt images drop out.  So the order is planned, and
Ray Data does the work:

- ``share_records`` puts each split's *records* (a small ``pyarrow`` table:
  paths and boxes, no pixels) in the object store once: every worker reads all
  of them.
- Each epoch, each worker computes the same plan (``raydet.data.sampling``)
  from the aspect-ratio groups, ``seed`` and the epoch, in optimizer steps of
  the run's global batch, and takes its own rank's share of every step: the
  step count is the same on every rank, and at every group size.
- The worker then streams its batches through a Ray Data pipeline:
  one row per decode task (``task_bounds``: 1, 2, 4, then ``batches_per_task``
  steps each) -> ``map_batches`` tasks that read, decode, transform and
  collate their planned batches (each image seeded from ``(seed, epoch, slot)``),
  with ``preserve_order``, so the worker receives its batches in plan order
  while later ones are decoded on the cluster's CPUs.  Nothing is
  materialised: Ray Data's backpressure bounds the batches in flight.  The
  execution runs in a small actor next to the worker
  (``raydet.data.stream_runner``), so the training process only fetches
  finished batches from the object store.
- A corrupt image found while decoding is dropped from its batch with a
  warning and counted (``BatchStream.problems``), and the batch goes on
  smaller.  A batch that loses every image still counts as a step: the
  worker yields a neighbouring batch again (the previous one; the next one
  if it was the first: ``raydet.data.empty_batches``), so the step count
  stays as planned and DDP stays in lockstep.  Only a worker whose every
  image is unusable raises.
- Evaluation deals batches of aspect-sorted images round robin, without
  repetition, so each image is decoded on exactly one worker, once.  Workers
  may get one batch more or less than each other, so evaluate with the
  unwrapped model (``model.module``): no collective call per batch.

Same seed, same global batch -> the same batches in the same steps, with the
same augmentations, run after run and at any group size.  Each epoch's plan
depends on nothing but ``(recipe, records, epoch, global_batch)``, so a run
resumed at epoch ``k`` (or at step ``s`` of it, by an elastic group of another
size: ``iter_train_batches(recipe, k, global_batch, first_step=s)``) sees what
the original run would have seen from there on.

Test-time augmentation: evaluation order depends only on the records and the
world size, so ``zip`` of ``eval_stream``s whose recipes differ only in the
pipeline (scale, ``RandomFlip`` with ``flip_ratio: 1.0``) gives the
views of the same images, batch by batch, for ``aug_test``.
"""
from __future__ import annotations

import collections
import json
import logging
import uuid
from typing import Iterator

import numpy as np
import pyarrow as pa
import ray
import ray.data
import ray.train
from ray.data.block import BlockAccessor

from .collate import Batch, unpack_batch
from .decode import BatchRecipe
from .decode_tasks import DecodeJob, run_decode_task
from .empty_batches import replace_empty_batches
from .problems import ProblemReport
from .sampling import GlobalBatch, RankSteps, TrainEpoch, aspect_groups, augment_seeds, plan_eval
from .stream_runner import process_stream_runner

logger = logging.getLogger(__name__)


def iter_train_batches(recipe: BatchRecipe, records: ray.ObjectRef, epoch: int, global_batch: GlobalBatch | None = None,
                       first_step: int = 0) -> "BatchStream":
    """In a Ray Train worker: this worker's training batches of ``records`` (``raydet.data.shared_records``) for
    ``epoch`` from its optimizer step ``first_step`` on (a run resumed mid-epoch; see the module docstring);
    ``global_batch``: one batch per worker per step by default."""
    context = ray.train.get_context()
    return train_stream(recipe, records, epoch, context.get_world_rank(), context.get_world_size(), first_step,
                        global_batch)


def train_epoch_plan(recipe: BatchRecipe, records: ray.ObjectRef, epoch: int, global_batch: GlobalBatch) -> TrainEpoch:
    """``epoch``'s plan of ``records`` over all workers (its step count and image positions)."""
    return train_epoch(recipe, ray.get(records), epoch, global_batch)


def iter_eval_batches(recipe: BatchRecipe, records: ray.ObjectRef) -> "BatchStream":
    """In a Ray Train worker: this worker's share of a val / test split's ``records``; over all workers every
    image exactly once."""
    context = ray.train.get_context()
    return eval_stream(recipe, records, context.get_world_rank(), context.get_world_size())


def _as_ref(records: pa.Table | ray.ObjectRef) -> tuple[ray.ObjectRef, pa.Table]:
    if isinstance(records, pa.Table):
        return ray.put(records), records
    return records, ray.get(records)


def train_epoch(recipe: BatchRecipe, table: pa.Table, epoch: int, global_batch: GlobalBatch) -> TrainEpoch:
    """``epoch``'s batches of ``table``'s records, in optimizer steps of ``global_batch``."""
    groups = aspect_groups(table["height"].to_numpy(), table["width"].to_numpy())
    return TrainEpoch.plan(groups, recipe.data.samples_per_gpu, global_batch, recipe.seed, epoch)


def train_stream(recipe: BatchRecipe, records: pa.Table | ray.ObjectRef, epoch: int, rank: int = 0,
                 world_size: int = 1, first_step: int = 0, global_batch: GlobalBatch | None = None) -> "BatchStream":
    """Rank ``rank``'s training batches for ``epoch`` from optimizer step ``first_step`` on: the batches (and
    augmentations) the whole epoch's plan has there, at any world size (also usable outside Ray Train, e.g.
    in a benchmark).  ``global_batch``: one batch per worker per step by default."""
    records_ref, table = _as_ref(records)
    plan = train_epoch(recipe, table, epoch, global_batch or GlobalBatch(world_size))
    positions, steps = plan.share(rank, world_size, first_step)
    seeds = augment_seeds(recipe.seed, epoch, plan.batches.shape)
    return BatchStream(records_ref, plan.batches[positions], seeds[positions], recipe, with_gt=True, steps=steps)


def eval_stream(recipe: BatchRecipe, records: pa.Table | ray.ObjectRef, rank: int = 0,
                world_size: int = 1) -> "BatchStream":
    """Rank ``rank``'s share of a val / test split's ``records`` (also usable outside Ray Train)."""
    records_ref, table = _as_ref(records)
    plan = plan_eval(table["height"].to_numpy(), table["width"].to_numpy(), recipe.data.eval_samples_per_gpu,
                     world_size)[rank]
    seeds = augment_seeds(recipe.seed, 0, plan.shape)
    return BatchStream(records_ref, plan, seeds, recipe, with_gt=False)


def _packed_rows(block: pa.Table) -> Iterator[tuple[int, Batch, dict]]:
    """A block of packed batches (one row each) -> ``(step, Batch, problems)`` per row."""
    accessor = BlockAccessor.for_block(block)
    for row in range(accessor.num_rows()):
        columns = BlockAccessor.for_block(accessor.slice(row, row + 1)).to_numpy()
        packed = {key: value[0] for key, value in columns.items()}
        problems = json.loads(str(packed.pop("problems")))
        yield int(packed.pop("step")), unpack_batch(packed), problems


def task_bounds(steps: int, batches_per_task: int) -> np.ndarray:
    """How the planned steps ``0 .. steps-1`` are split into decode tasks: task ``t`` decodes steps
    ``bounds[t] .. bounds[t+1] - 1``, 1, 2, 4, … of them, then ``batches_per_task`` each.  A task's
    batches arrive together when it ends, so small first tasks bring a pass's first batch after one
    batch's decoding instead of ``batches_per_task``'s; later tasks amortise the scheduling."""
    bounds, size = [0], 1
    while bounds[-1] < steps:
        bounds.append(min(bounds[-1] + size, steps))
        size = min(size * 2, batches_per_task)
    return np.array(bounds, dtype=np.int64)


def decode_tasks(bounds: np.ndarray) -> ray.data.Dataset:
    """A lazy Ray Dataset of one row (``id``: the task's number) per decode task of ``task_bounds``."""
    return ray.data.range(len(bounds) - 1, override_num_blocks=len(bounds) - 1)


class BatchStream:
    """One worker's batches for one pass: ``len()`` up front, then iterate (each iteration re-runs the pipeline).

    Args:
        records_ref: the records table in the object store.
        plan: ``[steps, batch_size]`` record indices (``-1`` = empty slot).
        seeds: ``[steps, batch_size]`` augmentation seeds.
        recipe: the split's pipeline, ``data`` section (padding multiple, decode resources) and seed.
        with_gt: include ``gt_bboxes`` / ``gt_labels`` (training) or not (evaluation).
        steps: how a training stream's batches fall into optimizer steps (``raydet.data.sampling.RankSteps``).

    Attributes:
        problems: images skipped while decoding (``corrupt_image`` …), accumulated over iterations.
        repeated_batches: steps that yielded a neighbouring batch again because every
            image of theirs was unusable (``raydet.data.empty_batches``).
    """

    def __init__(self, records_ref: ray.ObjectRef, plan: np.ndarray, seeds: np.ndarray, recipe: BatchRecipe,
                 with_gt: bool, steps: RankSteps | None = None):
        self.steps = steps
        self.records_ref = records_ref
        self.plan = plan
        self.seeds = seeds
        self.recipe = recipe
        self.with_gt = with_gt
        self.problems = ProblemReport()
        self.repeated_batches = 0
        self._pending: tuple | None = None  # a pass begun by start(), not yet iterated
        self._job_ref: ray.ObjectRef | None = None  # the DecodeJob its passes share

    def __len__(self) -> int:
        return len(self.plan)

    def dataset(self) -> ray.data.Dataset:
        """The Ray Dataset of packed batches (one row per planned batch, in plan order)."""
        data = self.recipe.data
        bounds = task_bounds(len(self.plan), data.batches_per_task)
        if self._job_ref is None:  # once per stream: a pass's tasks share it, and so do its later passes
            self._job_ref = ray.put(DecodeJob(self.records_ref, self.plan, self.seeds, self.recipe.pipeline,
                                              data.size_divisor, self.with_gt))
        dataset = decode_tasks(bounds).map_batches(
            run_decode_task, batch_size=1, num_cpus=data.decode_num_cpus, concurrency=data.decode_concurrency,
            fn_kwargs={"bounds": bounds, "job_ref": self._job_ref},
        )
        context = dataset.context
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        return dataset

    def start(self) -> "BatchStream":
        """Begin the next pass now: its first batches decode while the caller does other work
        (a worker building its model); iterating then picks them up.  Returns ``self``."""
        if self._pending is None and len(self.plan):
            runner, key = process_stream_runner(), uuid.uuid4().hex
            started = runner.start.remote(key, self.dataset())
            requests = collections.deque(runner.next_blocks.remote(key) for _ in range(2))
            self._pending = (runner, key, started, requests)
        return self

    def _rows(self) -> Iterator[tuple[int, Batch, dict]]:
        """Packed rows in plan order, from the runner; two block requests kept in flight."""
        self.start()
        (runner, key, started, requests), self._pending = self._pending, None
        try:
            ray.get(started)  # raises what went wrong in the first tasks (a transform's error, say)
            while block_refs := ray.get(requests.popleft()):
                requests.append(runner.next_blocks.remote(key))
                for block_ref in block_refs:
                    yield from _packed_rows(ray.get(block_ref))
        finally:
            runner.stop.remote(key)

    def _batches(self) -> Iterator[Batch]:
        """The decoded batches in plan order, some maybe empty; images skipped while decoding are logged
        and added to ``problems``."""
        for step, batch, problems in self._rows():
            skipped = ProblemReport.from_dict(problems)
            if skipped:
                logger.warning("step %d: skipped while decoding: %s", step, "; ".join(skipped.lines()))
                self.problems.merge(skipped)
            yield batch

    def __iter__(self) -> Iterator[Batch]:
        if not len(self.plan):
            return
        if not self.with_gt:  # evaluation: an empty batch has nothing to predict and no step count to keep
            yield from (batch for batch in self._batches() if batch["img_metas"])
            return
        for batch, repeated in replace_empty_batches(self._batches(), self.problems):
            self.repeated_batches += int(repeated)
            yield batch
