"""Instance masks in batches: ``gt_masks`` from collate, and their compressed-RLE packing for Ray Data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raydet.data import CocoDataset
from raydet.data.collate import collate, pack_batch, unpack_batch
from raydet.data.decode import decode_planned_batch
from raydet.data.transforms import Compose, Normalize, Pad, RandomFlip, Resize
from tests.data.data_helpers import mask_sample

pytestmark = pytest.mark.timeout(60)

MASK_COLUMNS = {"gt_mask_shape", "gt_mask_rle_lengths", "gt_mask_rle"}


def pipeline() -> Compose:
    return Compose([Resize(img_scale=[200, 100]), RandomFlip(flip_ratio=0.5, direction=["horizontal", "vertical"]),
                    Normalize([0, 0, 0], [1, 1, 1]), Pad(size_divisor=32)])


def three_samples() -> list:
    """Three images of different sizes (the second with no target left: its only instances are dropped)."""
    second = mask_sample(90, 50, image_id=2)
    second.keep_boxes(torch.tensor([False, False, True]))  # only the ignored triangle
    samples = [mask_sample(60, 100, image_id=1), second, mask_sample(33, 40, image_id=3)]
    return [pipeline()(s, np.random.default_rng(i)) for i, s in enumerate(samples)]


def test_collate_gives_each_images_target_masks_in_its_own_padded_frame():
    samples = three_samples()
    batch = collate(samples)
    assert set(batch) == {"img", "img_metas", "gt_bboxes", "gt_labels", "gt_masks"}
    for masks, boxes, meta, sample in zip(batch["gt_masks"], batch["gt_bboxes"], batch["img_metas"], samples,
                                          strict=True):
        assert masks.dtype == torch.uint8 and masks.shape == (len(boxes), *meta["pad_shape"])
        assert torch.equal(masks, sample.masks[~sample.ignore])  # ignored instances are not targets
    assert [len(m) for m in batch["gt_masks"]] == [2, 0, 2]
    assert {tuple(m.shape[-2:]) for m in batch["gt_masks"]} == {(128, 192), (192, 128), (128, 128)}  # not (192, 192)
    assert batch["img"].shape[-2:] == (192, 192)


def test_box_only_and_evaluation_batches_have_no_masks():
    boxes_only = three_samples()
    for sample in boxes_only:
        sample.masks = None
    assert "gt_masks" not in collate(boxes_only)
    assert set(collate(three_samples(), with_gt=False)) == {"img", "img_metas"}


def test_a_batch_mixing_images_with_and_without_masks_is_an_error():
    samples = three_samples()
    samples[1].masks = None
    with pytest.raises(ValueError, match=r"images \[2\] have no masks"):
        collate(samples)
    with pytest.raises(ValueError, match="have no masks"):
        collate(samples[1:2], with_mask=True)


def test_pack_unpack_masks_round_trip_exactly_as_compressed_rle():
    batch = collate(three_samples())
    packed = pack_batch(batch)
    assert MASK_COLUMNS <= set(packed) and "gt_masks" not in packed
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in packed.values())
    assert packed["gt_mask_rle"].dtype == np.uint8
    assert packed["gt_mask_shape"].tolist() == [list(meta["pad_shape"]) for meta in batch["img_metas"]]
    assert len(packed["gt_mask_rle_lengths"]) == sum(packed["gt_counts"]) == 4
    dense_bytes = sum(m.numel() for m in batch["gt_masks"])
    assert sum(packed[c].nbytes for c in MASK_COLUMNS) < dense_bytes / 20
    for key in packed:  # read-only inputs, as they come out of the object store
        packed[key].setflags(write=False)
    back = unpack_batch(packed)
    assert len(back["gt_masks"]) == 3
    for a, b in zip(back["gt_masks"], batch["gt_masks"], strict=True):
        assert a.dtype == torch.uint8 and torch.equal(a, b)


def test_an_empty_batch_of_a_dataset_with_masks_keeps_the_mask_keys():
    packed = pack_batch(collate([], with_mask=True))
    assert MASK_COLUMNS <= set(packed) and packed["gt_mask_shape"].shape == (0, 2)
    assert unpack_batch(packed)["gt_masks"] == []
    assert not MASK_COLUMNS & set(pack_batch(collate([])))


def test_decode_planned_batch_carries_masks_from_the_records(shapes_dir):
    dataset = CocoDataset(str(shapes_dir / "annotations/train.json"), str(shapes_dir / "images"), with_mask=True,
                          pipeline=list(pipeline().transforms))
    table = dataset.table()
    batch, problems = decode_planned_batch(table, np.array([0, 3, -1]), np.array([1, 2, 3]), dataset.pipeline, 32,
                                           with_gt=True)
    assert not problems and [len(m) for m in batch["gt_masks"]] == [len(b) for b in batch["gt_bboxes"]]
    assert [tuple(m.shape[-2:]) for m in batch["gt_masks"]] == [meta["pad_shape"] for meta in batch["img_metas"]]
    unpacked = unpack_batch(pack_batch(batch))
    assert all(torch.equal(a, b) for a, b in zip(unpacked["gt_masks"], batch["gt_masks"], strict=True))
    empty, _ = decode_planned_batch(table, np.array([-1, -1]), np.array([0, 0]), dataset.pipeline, 32, with_gt=True)
    assert empty["gt_masks"] == []  # the same keys as every other batch of this dataset
    evaluation, _ = decode_planned_batch(table, np.array([0]), np.array([0]), dataset.pipeline, 32, with_gt=False)
    assert set(evaluation) == {"img", "img_metas", "img_norm"}  # no targets; normalised where it arrives
