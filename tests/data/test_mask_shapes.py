"""The shapes dataset's instance masks: the painted pixels of each object, in step with unchanged images and boxes."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from raydet.data import CocoDataset
from raydet.data.masks import decode_masks, rle_areas, rle_boxes
from raydet.data.shapes import CLASSES

pytestmark = pytest.mark.timeout(60)

# What the generator made for seed 0 before it wrote masks: masks must not change the images or the boxes.
SEED_0_TRAIN_BOXES = {1: [[3, [7, 18, 60, 94]], [2, [101, 101, 41, 54]], [2, [7, 146, 18, 14]], [3, [91, 230, 52, 61]]],
                      2: [[2, [6, 111, 24, 13]]]}
SEED_0_PIXEL_SHA256 = {
    "train_000000.png": "0169703ced01d50260cd0689587b7a7e450ad7a716d64194ba46115c7284d86b",
    "train_000003.png": "8864fb0afa8128be60fd03707b99c67783dd8131af647c7a2e3a80154eb7c209",
}


@pytest.fixture(scope="module")
def shapes_with_masks(shapes_dir) -> CocoDataset:
    return CocoDataset(str(shapes_dir / "annotations/train.json"), str(shapes_dir / "images"), with_mask=True,
                       on_bad_record="error")


def test_same_seed_same_images_and_boxes_as_before_masks(shapes_dir):
    annotations = json.loads((shapes_dir / "annotations/train.json").read_text())["annotations"]
    found = {image_id: [[a["category_id"], a["bbox"]] for a in annotations if a["image_id"] == image_id]
             for image_id in SEED_0_TRAIN_BOXES}
    assert found == SEED_0_TRAIN_BOXES
    for name, digest in SEED_0_PIXEL_SHA256.items():
        pixels = np.asarray(Image.open(shapes_dir / "images" / name))
        assert hashlib.sha256(pixels.tobytes()).hexdigest() == digest, name


def test_masks_are_tight_in_their_boxes_and_true_shapes(shapes_with_masks):
    assert not shapes_with_masks.problems
    kinds = {name: [] for name in CLASSES}
    for record in shapes_with_masks.records:
        tight = rle_boxes(record["masks"], record["height"], record["width"])
        areas = rle_areas(record["masks"], record["height"], record["width"])
        for box, tight_box, area, label in zip(record["boxes"], tight, areas, record["labels"], strict=True):
            kinds[CLASSES[label]].append((box, tight_box, area / ((box[2] - box[0]) * (box[3] - box[1]))))
    assert sorted(kinds) == ["ellipse", "rectangle", "triangle"]  # every shape's own check below runs
    for name, objects in kinds.items():
        boxes, tight, fill = (np.array(column) for column in zip(*objects))
        assert len(boxes) >= 5, name
        if name == "triangle":  # an apex row thinner than a pixel may hold no pixel centre: up to 2 px inside
            assert (tight[:, :2] >= boxes[:, :2]).all() and (tight[:, 2:] <= boxes[:, 2:]).all()
            assert np.abs(tight - boxes).max() <= 2
            assert 0.4 < fill.min() and fill.max() < 0.6
        else:
            np.testing.assert_array_equal(tight, boxes, err_msg=name)
        if name == "ellipse":
            assert 0.7 < fill.min() and fill.max() < 0.85  # pi / 4 of the box
        if name == "rectangle":
            assert (fill == 1).all()


def test_masks_are_the_painted_pixels(shapes_with_masks):
    records = shapes_with_masks.records[:6]
    checked = 0
    for record in records:
        image = np.asarray(Image.open(record["path"]).convert("RGB"))
        masks = decode_masks(record["masks"], record["height"], record["width"])
        for mask in masks.astype(bool):
            colours = np.unique(image[mask], axis=0)
            assert len(colours) == 1  # one solid shape under each mask
            checked += 1
    assert checked == sum(len(record["boxes"]) for record in records) > 0  # every object's mask was looked at
