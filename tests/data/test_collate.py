"""Collate: the Batch contract, and its numpy packing for Ray Data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raydet.data.collate import collate, pack_batch, to_device, unpack_batch
from raydet.data.datasets import CocoDataset
from raydet.data.decode import PaddedByCollate, decode_planned_batch, normalize_at_arrival, prepare_sample
from raydet.data.sample import Sample
from raydet.data.transforms import Compose, Normalize, Pad, RandomFlip, Resize

pytestmark = pytest.mark.timeout(30)


def sample(image_id, height, width, boxes, ignore) -> Sample:
    pipeline = Compose([Resize(img_scale=[200, 100]), RandomFlip(flip_ratio=1.0), Normalize([0, 0, 0], [1, 1, 1]),
                        Pad(size_divisor=32)])
    raw = Sample(img=torch.full((3, height, width), 7, dtype=torch.uint8),
                 boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                 labels=torch.arange(len(boxes)), ignore=torch.tensor(ignore, dtype=torch.bool), image_id=image_id,
                 ori_shape=(height, width), img_shape=(height, width), pad_shape=(height, width))
    return pipeline(raw, np.random.default_rng(0))


def three_samples():
    return [sample(4, 50, 90, [[1, 1, 20, 20], [5, 5, 9, 9]], [False, True]),
            sample(9, 90, 50, [], []),
            sample(2, 33, 33, [[0, 0, 33, 33]], [False])]


def test_collate_pads_to_a_multiple_of_32_and_keeps_per_image_lists():
    batch = collate(three_samples())
    assert set(batch) == {"img", "img_metas", "gt_bboxes", "gt_labels"}
    assert batch["img"].dtype == torch.float32 and batch["img"].shape[:2] == (3, 3)
    height, width = batch["img"].shape[-2:]
    assert height % 32 == 0 and width % 32 == 0
    assert (height, width) == (192, 192)  # the tallest (180 px) and the widest (180 px), each padded to 32
    first, second, third = batch["img_metas"]
    assert first["ori_shape"] == (50, 90) and first["img_shape"] == (100, 180) and first["pad_shape"] == (128, 192)
    assert second["img_shape"] == (180, 100) and first["batch_input_shape"] == (192, 192)
    assert first["scale_factor"] == pytest.approx((2.0, 2.0, 2.0, 2.0))  # 50x90 -> 100x180 fits 200x100 exactly
    assert second["scale_factor"] == pytest.approx((100 / 50, 180 / 90, 100 / 50, 180 / 90))
    assert first["flip"] is True and first["flip_direction"] == "horizontal"
    assert [m["image_id"] for m in batch["img_metas"]] == [4, 9, 2]
    assert [b.shape for b in batch["gt_bboxes"]] == [(1, 4), (0, 4), (1, 4)]  # the ignored box is not a target
    assert [lab.tolist() for lab in batch["gt_labels"]] == [[0], [], [0]]
    assert batch["gt_bboxes"][0].dtype == torch.float32 and batch["gt_labels"][0].dtype == torch.int64
    assert torch.all(batch["img"][0, :, 100:, :] == 0) and torch.all(batch["img"][0, :, :100, :180] == 7)
    assert torch.all(batch["img"][0, :, :, 180:] == 0)


def test_eval_collate_has_only_img_and_metas():
    assert set(collate(three_samples(), with_gt=False)) == {"img", "img_metas"}


@pytest.mark.parametrize("with_gt", [True, False])
def test_pack_unpack_round_trip(with_gt):
    batch = collate(three_samples(), with_gt=with_gt)
    packed = pack_batch(batch)
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in packed.values())
    for key in packed:  # read-only inputs, as they come out of the object store
        packed[key].setflags(write=False)
    back = unpack_batch(packed)
    assert torch.equal(back["img"], batch["img"]) and back["img_metas"] == batch["img_metas"]
    if with_gt:
        for a, b in zip(back["gt_bboxes"] + back["gt_labels"], batch["gt_bboxes"] + batch["gt_labels"], strict=True):
            assert torch.equal(a, b)


def test_empty_batch():
    batch = unpack_batch(pack_batch(collate([])))
    assert batch["img"].shape == (0, 3, 0, 0) and batch["img_metas"] == [] and batch["gt_bboxes"] == []


@pytest.mark.parametrize("with_mask", [False, True])
def test_a_decoded_batch_is_normalised_where_it_arrives_exactly_as_its_pipeline_would(shapes_dir, with_mask):
    """decode_planned_batch leaves Normalize to to_device and Pad's pixels to collate: uint8 pixels on the wire,
    the same floats (and masks) after."""
    transforms = [Resize(img_scale=[300, 200]), RandomFlip(flip_ratio=0.5),
                  Normalize([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], to_bgr=True), Pad(size_divisor=32)]
    dataset = CocoDataset(str(shapes_dir / "annotations/train.json"), str(shapes_dir / "images"),
                          pipeline=transforms, with_mask=with_mask)
    indices, seeds = np.array([0, 5, -1, 3]), np.array([11, 12, 13, 14])
    decoded, problems = decode_planned_batch(dataset.table(), indices, seeds, dataset.pipeline, 32, with_gt=True)
    assert not problems and decoded["img"].dtype == torch.uint8 and decoded["img_norm"]["to_bgr"] is True
    arrived = to_device(unpack_batch(pack_batch(decoded)), "cpu")
    eager = collate([prepare_sample(dataset.records[i], dataset.pipeline, np.random.default_rng(s))
                     for i, s in zip(indices, seeds) if i >= 0], 32)
    assert "img_norm" not in arrived and arrived["img"].dtype == torch.float32
    assert torch.equal(arrived["img"], eager["img"]) and arrived["img_metas"] == eager["img_metas"]
    assert all(torch.equal(a, b) for a, b in zip(arrived["gt_bboxes"], eager["gt_bboxes"], strict=True))
    assert ("gt_masks" in arrived) == with_mask
    assert all(torch.equal(a, b) for a, b in zip(arrived.get("gt_masks", []), eager.get("gt_masks", []), strict=True))


@pytest.mark.parametrize("transforms", [
    [Pad(size_divisor=32), Normalize([1, 2, 3], [4, 5, 6])],  # padding normalised too: not 0 afterwards
    [Normalize([1, 2, 3], [4, 5, 6]), Pad(size_divisor=32, pad_val=7.0)],  # padding another value
    [Normalize([1, 2, 3], [4, 5, 6]), RandomFlip(flip_ratio=0.5)],  # a transform of normalised pixels
    [Resize(img_scale=[300, 200])],  # nothing to normalise
])
def test_pipelines_whose_normalising_cannot_wait_are_normalised_while_decoding(transforms):
    pipeline = Compose(transforms)
    assert normalize_at_arrival(pipeline) == (pipeline, None)
    head, normalize = normalize_at_arrival(Compose([Resize(img_scale=[300, 200]), Normalize([1, 2, 3], [4, 5, 6]),
                                                    Pad(size_divisor=32)]))
    assert isinstance(normalize, Normalize) and [type(t) for t in head.transforms] == [Resize, PaddedByCollate]
