"""Instance masks as compressed RLE (``raydet.data.masks``): polygons and RLE in, dense bitmaps out."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raydet.data.masks import (
    compressed_runs,
    decode_masks,
    encode_masks,
    json_rle,
    rle_areas,
    rle_boxes,
    segmentation_to_rle,
)


def test_polygon_mask_fills_its_outline_and_parts_merge():
    square = [1, 1, 5, 1, 5, 4, 1, 4]  # pycocotools keeps the pixels whose centres are inside: rows 1-3, columns 1-4
    counts = segmentation_to_rle([square, [6, 5, 7, 5, 7, 6, 6, 6]], height=7, width=8)
    mask = decode_masks([counts], 7, 8)[0]
    assert mask[1:4, 1:5].all() and mask[5, 6] and mask.sum() == 12 + 1
    assert rle_areas([counts], 7, 8).tolist() == [13.0]
    assert rle_boxes([counts], 7, 8).tolist() == [[1.0, 1.0, 7.0, 6.0]]


def test_a_polygon_part_of_fewer_than_3_points_is_left_out_not_the_object():
    square = [10, 10, 50, 10, 50, 50, 10, 50]
    counts = segmentation_to_rle([square, [1, 1, 2, 2]], height=100, width=100)
    assert counts == segmentation_to_rle([square], 100, 100) and rle_areas([counts], 100, 100).tolist() == [1600.0]


def test_masks_round_trip_through_rle_of_every_kind():
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 9, 11)) < 0.4).astype(np.uint8)
    counts = encode_masks(masks)
    assert (decode_masks(counts, 9, 11) == masks).all()
    for single in counts:
        compressed = segmentation_to_rle({"size": [9, 11], "counts": single.decode()}, 9, 11)
        runs = compressed_runs(single)
        uncompressed = segmentation_to_rle({"size": [9, 11], "counts": runs}, 9, 11)
        assert compressed == uncompressed == single and sum(runs) == 99
    assert decode_masks([], 9, 11).shape == (0, 9, 11) and encode_masks(np.zeros((0, 9, 11))) == []


@pytest.mark.parametrize("segmentation, message", [
    ([[1, 2, 3, 4]], "at least 3 x, y points"),
    ([[1, 2, 3, 4, 5, 6, 7]], "odd number of coordinates"),
    ([[1, 2, 3, 4], [5, 6]], "at least 3 x, y points"),
    ([[1e9, 0, 5, 0, 5, 5]], "reaches far outside the 8x7 image"),
    ({"size": [None, None], "counts": "9250Q1"}, "is not the image's [7, 8]"),
    ([[1, 2, 3, "a", 5, 6]], "not a list of numbers"),
    ([[1, 2, 3, float("nan"), 5, 6]], "non-finite"),
    ([], "empty"),
    ({"size": [7, 9], "counts": "9250Q1"}, "is not the image's [7, 8]"),
    ({"size": [7, 8], "counts": "9250Q"}, "not a valid compressed RLE of 56 pixels"),
    ({"size": [7, 8], "counts": "\x7f\x7f"}, "not a valid compressed RLE"),
    ({"size": [7, 8], "counts": [10, 5]}, "sum to 56"),
    (5, "neither polygons nor RLE"),
])
def test_malformed_segmentations_are_named(segmentation, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        segmentation_to_rle(segmentation, 7, 8)


def test_json_rle_is_cocos_json_form_of_the_same_mask():
    mask = np.zeros((1, 7, 5), np.uint8)
    mask[0, 2:5, 1:4] = 1
    counts = encode_masks(mask)[0]
    for given in (counts, counts.decode("ascii")):
        rle = json.loads(json.dumps(json_rle(given, 7, 5)))  # JSON-ready
        assert rle["size"] == [7, 5] and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(segmentation_to_rle(rle, 7, 5), counts)
