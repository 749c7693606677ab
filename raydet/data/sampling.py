"""Which images go into which batch on which worker: epoch plans, computed up front.

Training (mmdetection's ``DistributedGroupSampler``): images are split into
aspect-ratio groups (landscape: width > height, and the rest) so a batch never
mixes them and padding stays small.  For each epoch, from ``(seed, epoch)``:
each group is shuffled and topped up to a multiple of ``samples_per_gpu`` by
repeating some of its images, cut into batches, the batches of all groups are
shuffled together, topped up to a multiple of ``world_size`` by repeating the
first batches, and dealt out in turn (batch ``b`` to rank ``b % world_size``).
So every rank gets exactly ``train_steps_per_epoch(...)`` full batches, every
image appears at least once per epoch, and the plan depends on nothing but
the group sizes, the seed and the epoch.

Evaluation: images are ordered by aspect ratio (for tight padding), cut into
batches, and dealt out the same way without any repetition: every image is
in exactly one batch on exactly one rank.

Plans are ``[steps, samples_per_gpu]`` int64 arrays of record indices, ``-1``
marking an empty slot (only in a last, short evaluation batch).

Elastic runs (``scaling.num_workers: [MIN, MAX]``): an epoch's batches are
planned for the run's reference worker count (its maximum, ``GlobalBatch``),
whatever the group's size, and cut into optimizer steps of
``reference_workers × accumulate`` batches (``TrainEpoch``).  A group of ``W``
workers deals each step's batches out in turn; a smaller group takes more of
them per step (gradient accumulation), so every step sees the same images at
any size.  Positions in an epoch are counted in images, so an epoch resumed at
another size goes on with the very next step.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_AUGMENT_STREAM = 0xA06  # separates the augmentation seeds' random stream from the order's


def aspect_groups(heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """``[N]`` int group per image: 1 where width > height (landscape), else 0."""
    return (np.asarray(widths) > np.asarray(heights)).astype(np.int64)


def train_steps_per_epoch(groups: np.ndarray, samples_per_gpu: int, world_size: int) -> int:
    """Batches each rank gets per epoch: ``ceil(sum_g ceil(n_g / samples_per_gpu) / world_size)``."""
    sizes = np.bincount(np.asarray(groups, dtype=np.int64))
    batches = int(sum(-(-int(n) // samples_per_gpu) for n in sizes if n > 0))
    return -(-batches // world_size)


def plan_train_batches(groups: np.ndarray, samples_per_gpu: int, align: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's batches in order, ``[num_batches, samples_per_gpu]`` record indices; ``num_batches`` is a
    multiple of ``align`` (the first batches repeated at the end)."""
    groups = np.asarray(groups, dtype=np.int64)
    if len(groups) == 0:
        raise ValueError("cannot plan an epoch over zero images")
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        padded = np.resize(members, -(-len(members) // samples_per_gpu) * samples_per_gpu)  # repeats cyclically
        batches.append(padded.reshape(-1, samples_per_gpu))
    batches = np.concatenate(batches)[rng.permutation(sum(len(b) for b in batches))]
    return np.resize(batches, (-(-len(batches) // align) * align, samples_per_gpu))


def plan_train_epoch(groups: np.ndarray, samples_per_gpu: int, world_size: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's batches for every rank: ``[world_size, steps, samples_per_gpu]`` record indices (batch ``b``
    of ``plan_train_batches`` to rank ``b % world_size``)."""
    batches = plan_train_batches(groups, samples_per_gpu, world_size, seed, epoch)
    return batches.reshape(-1, world_size, samples_per_gpu).transpose(1, 0, 2).copy()


@dataclass(frozen=True)
class GlobalBatch:
    """What one optimizer step takes, whatever the number of workers alive: ``reference_workers × accumulate``
    batches of ``samples_per_gpu`` images — the batches a group of ``reference_workers`` takes per step
    (the run's fixed worker count, or the maximum of a range)."""

    reference_workers: int = 1
    accumulate: int = 1

    def __post_init__(self) -> None:
        if self.reference_workers < 1 or self.accumulate < 1:
            raise ValueError(f"a global batch needs at least one worker and one batch each, got {self}")

    @property
    def batches_per_step(self) -> int:
        return self.reference_workers * self.accumulate


@dataclass(frozen=True)
class RankSteps:
    """How one rank's batches of an epoch fall into the epoch's optimizer steps.

    Attributes:
        step_of_batch: ``[n]`` the epoch's step (0-based, non-decreasing) each of this rank's batches belongs to.
        step_sizes: ``[num_steps]`` batches in each step of the epoch, over all ranks (at least ``world_size``).
        world_size: ranks sharing each step.
        reference_workers: the ``GlobalBatch``'s; an iteration is ``reference_workers`` batches (one batch
            per worker of a run at that size), so iterations count the same at any world size.
    """

    step_of_batch: np.ndarray
    step_sizes: np.ndarray
    world_size: int
    reference_workers: int

    @classmethod
    def grouped(cls, num_batches: int, accumulate: int, world_size: int = 1) -> "RankSteps":
        """Every rank has ``num_batches`` and steps every ``accumulate`` of them (the last group may be shorter)."""
        step_of_batch = np.arange(num_batches) // accumulate
        per_rank = np.bincount(step_of_batch, minlength=-(-num_batches // accumulate))
        return cls(step_of_batch, per_rank * world_size, world_size, world_size)

    @property
    def num_steps(self) -> int:
        return len(self.step_sizes)

    @property
    def first_step(self) -> int:
        return int(self.step_of_batch[0]) if len(self.step_of_batch) else self.num_steps

    def loss_scale(self, step: int) -> float:
        """What each batch's loss is multiplied by: DDP averages over ``world_size`` ranks, so the step's gradient
        is the mean over its ``step_sizes[step]`` batches."""
        return self.world_size / int(self.step_sizes[step])

    @functools.cached_property
    def _batches_through(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.step_sizes)])

    def iterations_through(self, step: int) -> int:
        """Iterations from the epoch's start to the end of ``step`` (0 for ``step`` -1)."""
        return int(self._batches_through[step + 1]) // self.reference_workers


@dataclass(frozen=True)
class TrainEpoch:
    """An epoch's training batches cut into optimizer steps; the same plan at every world size up to the
    ``GlobalBatch``'s reference (``plan_train_batches`` aligned to it).

    Attributes:
        batches: ``[num_batches, samples_per_gpu]`` record indices, in order.
        global_batch: how many batches one step takes.
    """

    batches: np.ndarray
    global_batch: GlobalBatch

    @classmethod
    def plan(cls, groups: np.ndarray, samples_per_gpu: int, global_batch: GlobalBatch, seed: int,
             epoch: int) -> "TrainEpoch":
        return cls(plan_train_batches(groups, samples_per_gpu, global_batch.reference_workers, seed, epoch),
                   global_batch)

    @property
    def num_steps(self) -> int:
        return -(-len(self.batches) // self.global_batch.batches_per_step)

    @property
    def step_sizes(self) -> np.ndarray:
        """``[num_steps]`` batches per step (the last one may be short; always a multiple of the reference)."""
        per_step = self.global_batch.batches_per_step
        return np.diff(np.minimum(np.arange(self.num_steps + 1) * per_step, len(self.batches)))

    def images_before(self, step: int) -> int:
        """Images (planned slots) in the epoch's steps before ``step``: a position that means the same at any size."""
        return int(self.step_sizes[:step].sum()) * self.batches.shape[1]

    def step_at(self, images: int) -> int:
        """The step that holds image position ``images`` of the epoch: the inverse of ``images_before`` (a
        position between steps, from a checkpoint of another global batch, goes back to its step's start)."""
        starts = np.concatenate([[0], np.cumsum(self.step_sizes)]) * self.batches.shape[1]
        return int(np.searchsorted(starts, images, side="right")) - 1 if images < starts[-1] else self.num_steps

    def share(self, rank: int, world_size: int, first_step: int = 0) -> tuple[np.ndarray, RankSteps]:
        """Rank ``rank``'s batches from ``first_step`` on, in a group of ``world_size``: each step's batches
        dealt out in turn (its ``i``-th to rank ``i % world_size``).  Returns the ``[n]`` batch
        positions (rows of ``batches``) and how they group into steps."""
        if not 1 <= world_size <= self.global_batch.reference_workers or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of {world_size}: a group has 1 to {self.global_batch.reference_workers} "
                             "workers (the global batch's reference)")
        per_step = self.global_batch.batches_per_step
        index = np.arange(first_step * per_step, len(self.batches))
        step = index // per_step
        mine = (index - step * per_step) % world_size == rank
        steps = RankSteps(step[mine], self.step_sizes, world_size, self.global_batch.reference_workers)
        return index[mine], steps


def augment_seeds(seed: int, epoch: int, shape: tuple[int, ...]) -> np.ndarray:
    """Per-slot augmentation seeds (uint64) for a plan of ``shape``, from ``(seed, epoch)``."""
    return np.random.default_rng([seed, epoch, _AUGMENT_STREAM]).integers(0, 2**63, size=shape, dtype=np.int64)


def plan_eval(heights: np.ndarray, widths: np.ndarray, samples_per_gpu: int, world_size: int) -> list[np.ndarray]:
    """Per rank, ``[steps_r, samples_per_gpu]`` record indices (``-1`` = empty); each image exactly once overall."""
    ratios = np.asarray(widths, dtype=np.float64) / np.maximum(np.asarray(heights, dtype=np.float64), 1)
    order = np.argsort(ratios, kind="stable")
    padded = np.full(-(-len(order) // samples_per_gpu) * samples_per_gpu, -1, dtype=np.int64)
    padded[: len(order)] = order
    batches = padded.reshape(-1, samples_per_gpu)
    return [batches[rank::world_size] for rank in range(world_size)]
