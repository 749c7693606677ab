"""Instance masks through the transforms: every geometric step moves masks with the image and the boxes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raydet.data import transforms as T
from raydet.data.sample import masks_with_pixels
from tests.data.data_helpers import mask_sample, tight_boxes

pytestmark = pytest.mark.timeout(60)

ALL_FLIPS = ["horizontal", "vertical", "diagonal"]


def assert_masks_in_step(sample, atol: float) -> None:
    """Masks ``[N, H, W]`` in the image's frame, one per box, each mask's tight box the box within ``atol``."""
    assert sample.masks.dtype == torch.uint8 and sample.masks.shape[-2:] == sample.img.shape[-2:]
    assert len(sample.masks) == len(sample.boxes) == len(sample.labels) == len(sample.ignore)
    torch.testing.assert_close(tight_boxes(sample.masks), sample.boxes, atol=atol, rtol=0)


def assert_pixels_are_the_masks(sample) -> None:
    """The image (255 on the instances, 0 elsewhere, as ``mask_sample`` paints it) still shows exactly the masks."""
    assert torch.equal(sample.img[0] > 127, sample.masks.sum(dim=0) > 0)


@pytest.mark.parametrize("direction", ALL_FLIPS)
def test_flip_moves_masks_with_pixels_and_boxes_and_twice_is_the_identity(direction):
    flip = T.RandomFlip(flip_ratio=1.0, direction=direction)
    once = flip(mask_sample(), np.random.default_rng(0))
    assert_masks_in_step(once, atol=0)
    assert_pixels_are_the_masks(once)
    twice = flip(once, np.random.default_rng(0))
    assert torch.equal(twice.masks, mask_sample().masks)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_rotate90_moves_masks_with_pixels_and_boxes(turns):
    rotate = T.RandomRotate90(prob=1.0)
    for seed in range(100):  # a generator that makes RandomRotate90 turn `turns` times
        probe = np.random.default_rng(seed)
        probe.random()
        if int(probe.integers(1, 4)) == turns:
            break
    turned = rotate(mask_sample(), np.random.default_rng(seed))
    assert_masks_in_step(turned, atol=0)
    assert_pixels_are_the_masks(turned)
    assert torch.equal(turned.masks, torch.rot90(mask_sample().masks, turns, dims=(-2, -1)))


@pytest.mark.parametrize("resize", [T.Resize(scale_factor=2.5), T.Resize(scale_factor=0.7), T.Resize(scale_factor=0.3),
                                    T.Resize(img_scale=[333, 111]), T.Resize(img_scale=[90, 200], keep_ratio=False)])
def test_resize_scales_masks_nearest_with_their_boxes(resize):
    resized = resize(mask_sample(), np.random.default_rng(0))
    assert resized.img_shape != (60, 100)
    assert set(resized.masks.unique().tolist()) == {0, 1}  # nearest neighbour: still 0 / 1
    assert_masks_in_step(resized, atol=1.0)


def test_pad_pads_masks_with_zeros_to_the_padded_image():
    padded = T.Pad(size_divisor=32)(mask_sample(), None)
    assert padded.masks.shape == (3, 64, 128) and padded.pad_shape == (64, 128)
    assert torch.equal(padded.masks[:, :60, :100], mask_sample().masks) and padded.masks[:, 60:].sum() == 0
    assert padded.masks[:, :, 100:].sum() == 0
    assert_masks_in_step(padded, atol=0)


def coordinate_sample():
    """``mask_sample`` whose image's channels 1 and 2 hold each pixel's x and y (to find a crop's window)."""
    sample = mask_sample()
    height, width = sample.img.shape[-2:]
    sample.img[1] = torch.arange(width, dtype=torch.uint8).expand(height, width)
    sample.img[2] = torch.arange(height, dtype=torch.uint8)[:, None].expand(height, width)
    return sample


def test_random_crop_crops_masks_and_drops_instances_without_pixels_left():
    crop = T.RandomCrop(crop_size=[15, 20], allow_negative_crop=True)
    rng = np.random.default_rng(0)
    dropped_for_the_mask_only = kept = 0
    for _ in range(100):
        original = coordinate_sample()
        out = crop(coordinate_sample(), rng)
        left, top = int(out.img[1, 0, 0]), int(out.img[2, 0, 0])
        assert out.masks.shape[-2:] == (15, 20) == out.img_shape
        assert torch.equal(out.masks, original.masks[out.labels, top:top + 15, left:left + 20])
        assert_pixels_are_the_masks(out)
        box_in_window = ((original.boxes[:, 0] < left + 20) & (original.boxes[:, 2] > left)
                         & (original.boxes[:, 1] < top + 15) & (original.boxes[:, 3] > top))
        mask_in_window = masks_with_pixels(original.masks[:, top:top + 15, left:left + 20])
        assert out.labels.tolist() == torch.nonzero(box_in_window & mask_in_window).flatten().tolist()
        assert torch.equal(out.ignore, original.ignore[out.labels])  # flags stay with their masks
        dropped_for_the_mask_only += int((box_in_window & ~mask_in_window).sum())
        kept += len(out.labels)
        tight = tight_boxes(out.masks)  # the clipped box holds its cropped mask
        assert (tight[:, :2] >= out.boxes[:, :2]).all() and (tight[:, 2:] <= out.boxes[:, 2:]).all()
    assert dropped_for_the_mask_only > 0
    assert kept > 0  # the per-instance checks above saw instances


def test_photometric_and_normalize_leave_masks_alone():
    sample = mask_sample()
    photometric = T.Compose([T.PhotoMetricDistortion(), T.Normalize([1, 2, 3], [4, 5, 6])])
    out = photometric(mask_sample(), np.random.default_rng(0))
    assert torch.equal(out.masks, sample.masks) and torch.equal(out.boxes, sample.boxes)


@pytest.mark.parametrize("seed", range(40))
def test_random_training_pipelines_keep_masks_and_boxes_consistent(seed):
    uncropped = T.Compose([T.RandomRotate90(prob=0.75), T.RandomFlip(flip_ratio=0.5, direction=ALL_FLIPS),
                           T.Resize(img_scale=[[160, 60], [320, 240]], multiscale_mode="range"),
                           T.PhotoMetricDistortion(), T.Normalize([0, 0, 0], [1, 1, 1]), T.Pad(size_divisor=32)])
    out = uncropped(mask_sample(), np.random.default_rng(seed))
    assert_masks_in_step(out, atol=1.0)
    cropped = T.Compose([T.RandomFlip(flip_ratio=0.5, direction=ALL_FLIPS), T.RandomRotate90(prob=0.75),
                         T.RandomCrop(crop_size=[0.3, 0.3], crop_type="relative_range"), T.Pad(size_divisor=32)])
    out = cropped(mask_sample(), np.random.default_rng(seed))
    assert len(out.masks) > 0  # RandomCrop keeps a target: the checks below see one
    assert out.masks.shape[-2:] == out.img.shape[-2:] and masks_with_pixels(out.masks).all()
    assert_pixels_are_the_masks(out)
    tight = tight_boxes(out.masks)
    assert (tight[:, :2] >= out.boxes[:, :2]).all() and (tight[:, 2:] <= out.boxes[:, 2:]).all()
