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
"""
from __future__ import annotations

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


def plan_train_epoch(groups: np.ndarray, samples_per_gpu: int, world_size: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's batches for every rank: ``[world_size, steps, samples_per_gpu]`` record indices."""
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
    steps = -(-len(batches) // world_size)
    batches = np.resize(batches, (steps * world_size, samples_per_gpu))
    return batches.reshape(steps, world_size, samples_per_gpu).transpose(1, 0, 2).copy()


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
