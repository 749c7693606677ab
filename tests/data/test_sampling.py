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


def test_elastic_epoch_resumed_at_any_position_at_another_size_takes_every_image_once():
    """Random (images, batch size, reference size, accumulate, W1, W2, position): the steps before the position
    at W1 and from it at W2 consume the epoch's planned batches exactly once, whatever the sizes; the position
    round-trips through its image count; with nothing to top up, every image is trained on exactly once."""
    from raydet.data.sampling import GlobalBatch, TrainEpoch
    rng = np.random.default_rng(0)
    for case in range(300):
        per_gpu, reference, accumulate = int(rng.integers(1, 5)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
        even = case % 2 == 0  # sizes that need no top-up: each group a multiple of the batch, batches of the reference
        num_images = per_gpu * reference * int(rng.integers(1, 8)) if even else int(rng.integers(1, 80))
        groups = np.zeros(num_images, dtype=np.int64) if even else rng.integers(0, 2, num_images)
        plan = TrainEpoch.plan(groups, per_gpu, GlobalBatch(reference, accumulate), seed=case, epoch=1)
        before, after = int(rng.integers(1, reference + 1)), int(rng.integers(1, reference + 1))
        position = plan.images_before(int(rng.integers(0, plan.num_steps + 1)))
        resumed_at = plan.step_at(position)
        consumed = []
        for world_size, first, resumed in ((before, 0, False), (after, resumed_at, True)):
            for rank in range(world_size):
                positions, steps = plan.share(rank, world_size, first_step=first)
                rows = plan.batches[positions]
                keep = steps.step_of_batch >= resumed_at if resumed else steps.step_of_batch < resumed_at
                assert np.all(np.diff(steps.step_of_batch) >= 0)
                consumed.extend(map(tuple, rows[keep]))
        assert sorted(consumed) == sorted(map(tuple, plan.batches)), case
        images = np.concatenate([np.array(row) for row in consumed]) if consumed else np.array([], dtype=np.int64)
        assert set(images.tolist()) == set(range(num_images)), case  # every image at least once
        if even:
            assert sorted(images.tolist()) == list(range(num_images)), case  # ... and exactly once


def test_elastic_step_sizes_do_not_depend_on_the_group():
    """A step's batches over all ranks, and so its loss scale × ranks, is the same at every world size."""
    from raydet.data.sampling import GlobalBatch, TrainEpoch
    plan = TrainEpoch.plan(np.zeros(37, dtype=np.int64), 2, GlobalBatch(4, 2), seed=0, epoch=0)
    assert plan.batches.shape == (20, 2) and plan.step_sizes.tolist() == [8, 8, 4]
    for world_size in (1, 2, 3, 4):
        shares = [plan.share(rank, world_size)[1] for rank in range(world_size)]
        per_step = sum(np.bincount(steps.step_of_batch, minlength=3) for steps in shares)
        assert per_step.tolist() == [8, 8, 4]
        assert all(np.bincount(steps.step_of_batch, minlength=3).min() >= 1 for steps in shares)  # none idle
        assert shares[0].loss_scale(2) == world_size / 4 and shares[0].iterations_through(2) == 5
    assert [plan.step_at(images) for images in (0, 3, 16, 31, 32, 40)] == [0, 0, 1, 1, 2, 3]
