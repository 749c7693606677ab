"""Epoch plans: equal steps on every rank, seeded reshuffles, aspect groups, evaluation exactly once."""
from __future__ import annotations

import math

import numpy as np
import pytest

from raydet.data.sampling import augment_seeds, plan_eval, plan_train_epoch, train_steps_per_epoch

pytestmark = pytest.mark.timeout(30)
GROUPS = np.array([0] * 13 + [1] * 8)[np.random.default_rng(1).permutation(21)]


@pytest.mark.parametrize("world_size, per_gpu", [(1, 2), (2, 2), (3, 4), (4, 1)])
def test_every_rank_gets_the_same_number_of_full_single_group_batches(world_size, per_gpu):
    plan = plan_train_epoch(GROUPS, per_gpu, world_size, seed=0, epoch=0)
    steps = train_steps_per_epoch(GROUPS, per_gpu, world_size)
    batches = math.ceil(13 / per_gpu) + math.ceil(8 / per_gpu)  # each group filled up to whole batches
    assert steps == math.ceil(batches / world_size)  # then the batches filled up to whole steps of every rank
    assert plan.shape == (world_size, steps, per_gpu)
    assert set(plan.ravel()) == set(range(len(GROUPS)))  # every image at least once
    assert all(len(set(GROUPS[batch])) == 1 for batch in plan.reshape(-1, per_gpu))  # no mixed aspect ratios
    extra = plan.size - len(GROUPS)  # repeats: fill-up of groups to a batch and of batches to the ranks
    assert 0 <= extra < 2 * per_gpu + world_size * per_gpu


def test_plans_are_seeded_and_reshuffled_per_epoch():
    a = plan_train_epoch(GROUPS, 2, 2, seed=7, epoch=3)
    assert np.array_equal(a, plan_train_epoch(GROUPS, 2, 2, seed=7, epoch=3))
    assert not np.array_equal(a, plan_train_epoch(GROUPS, 2, 2, seed=7, epoch=4))
    assert not np.array_equal(a, plan_train_epoch(GROUPS, 2, 2, seed=8, epoch=3))
    seeds = augment_seeds(7, 3, a.shape)
    assert np.array_equal(seeds, augment_seeds(7, 3, a.shape)) and len(np.unique(seeds)) == seeds.size


@pytest.mark.parametrize("world_size, per_gpu", [(1, 1), (2, 3), (3, 2), (5, 4)])
def test_eval_plan_covers_every_image_exactly_once(world_size, per_gpu):
    heights = np.random.default_rng(0).integers(10, 100, size=23)
    widths = np.random.default_rng(1).integers(10, 100, size=23)
    plans = plan_eval(heights, widths, per_gpu, world_size)
    assert len(plans) == world_size
    seen = np.concatenate([p.ravel() for p in plans])
    seen = seen[seen >= 0]
    assert sorted(seen.tolist()) == list(range(23))
    assert max(len(p) for p in plans) - min(len(p) for p in plans) <= 1
