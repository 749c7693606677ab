"""Masks in the pictures: filled in their class's colour, above the score threshold only, scaled with the image."""
from __future__ import annotations

import io

import numpy as np
import torch
import torchvision
from PIL import Image

from raydet.data.masks import encode_masks
from raydet.data.records import make_record
from raydet.visualization import (
    MASK_ALPHA,
    PALETTE,
    comparison_png,
    detections_png,
    draw_detections,
    ground_truth_of,
    rle_masks,
)

CLASSES = ["rectangle", "ellipse"]
HEIGHT, WIDTH = 100, 150


def disc(cy: int, cx: int, radius: int) -> np.ndarray:
    """``[H, W]`` uint8: a filled disc."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    return ((rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2).astype(np.uint8)


MASKS = np.stack([disc(65, 40, 20), disc(65, 110, 20)])  # inside boxes [20, 45, 60, 85] and [90, 45, 130, 85]
BOXES = torch.tensor([[20.0, 45.0, 60.0, 85.0], [90.0, 45.0, 130.0, 85.0]])
RLES = [{"size": [HEIGHT, WIDTH], "counts": counts} for counts in encode_masks(MASKS)]


def blended(background: int, label: int) -> torch.Tensor:
    """The colour of a mask pixel of class ``label`` over a grey ``background``."""
    color = torch.tensor(Image.new("RGB", (1, 1), PALETTE[label]).getpixel((0, 0)), dtype=torch.float)
    return (background * (1 - MASK_ALPHA) + color * MASK_ALPHA).to(torch.uint8)


def test_a_kept_detections_mask_is_filled_in_its_class_colour_a_dropped_ones_is_not():
    image = torch.full((3, HEIGHT, WIDTH), 90, dtype=torch.uint8)
    drawn = draw_detections(image, BOXES, torch.tensor([1, 0]), torch.tensor([0.9, 0.2]), CLASSES, 0.3, RLES)
    assert (drawn[:, 65, 40].int() - blended(90, 1).int()).abs().max() <= 1  # the kept mask's centre
    assert torch.equal(drawn[:, 65, 110], image[:, 65, 110])  # the dropped detection: neither mask nor box
    assert torch.equal(drawn[:, 50, 25], image[:, 50, 25])  # inside the kept box, outside its disc
    without = draw_detections(image, BOXES, torch.tensor([1, 0]), torch.tensor([0.9, 0.2]), CLASSES, 0.3)
    assert torch.equal(without[:, 65, 40], image[:, 65, 40])


def test_rle_masks_are_scaled_to_the_picture():
    scaled = rle_masks(RLES, (50, 75))
    assert scaled.shape == (2, 50, 75) and scaled.dtype == torch.bool
    assert scaled[0, 32, 20] and not scaled[0, 32, 55] and scaled[1, 32, 55]
    assert torch.equal(rle_masks(RLES, (HEIGHT, WIDTH)), torch.from_numpy(MASKS).bool())
    assert rle_masks([], (50, 75)).shape == (0, 50, 75)


def test_comparison_draws_ground_truth_masks_from_records_and_detected_masks_from_rle():
    image = torch.full((3, HEIGHT, WIDTH), 90, dtype=torch.uint8)
    record = make_record(1, "1.png", HEIGHT, WIDTH, BOXES.numpy(), [1, 1], masks=encode_masks(MASKS))
    truth = ground_truth_of(record)
    assert truth["masks"] == RLES
    found = {"boxes": BOXES, "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.1]), "masks": RLES}
    size, header, padding = 300, 16, 6  # panel side 300 (scale 2), title strip, make_grid padding

    def panels(truth: dict, found: dict) -> tuple[torch.Tensor, torch.Tensor]:
        png = comparison_png([(image, truth, found)], CLASSES, 0.3, size=size)
        grid = torchvision.transforms.v2.functional.pil_to_tensor(Image.open(io.BytesIO(png)).convert("RGB"))
        top = padding + header
        return (grid[:, top: top + 2 * HEIGHT, padding: padding + 2 * WIDTH],
                grid[:, top: top + 2 * HEIGHT, 2 * padding + size: 2 * padding + size + 2 * WIDTH])

    left, right = panels(truth, found)
    boxes_only_left, boxes_only_right = panels(ground_truth_of({**record, "masks": None}),
                                               {k: v for k, v in found.items() if k != "masks"})
    centres = [(130, 80), (130, 220)]  # the discs' centres at scale 2
    for y, x in centres:  # ground truth: every mask
        assert (left[:, y, x].int() - blended(90, 1).int()).abs().max() <= 1
        assert torch.equal(boxes_only_left[:, y, x], torch.full((3,), 90, dtype=torch.uint8))
    assert (right[:, 130, 80].int() - blended(90, 1).int()).abs().max() <= 1  # the detection scoring 0.9
    assert torch.equal(right[:, 130, 220], boxes_only_right[:, 130, 220])  # 0.1: below the threshold


def test_a_detections_picture_has_their_masks():
    image = torch.full((3, HEIGHT, WIDTH), 200, dtype=torch.uint8)
    found = {"boxes": BOXES.numpy(), "labels": np.array([0, 1]), "scores": np.array([0.8, 0.7]), "masks": RLES}
    picture = torchvision.io.decode_png(torch.frombuffer(bytearray(detections_png(image, found, CLASSES)),
                                                         dtype=torch.uint8))
    assert picture.shape == image.shape
    assert (picture[:, 65, 40].int() - blended(200, 0).int()).abs().max() <= 1
    assert (picture[:, 65, 110].int() - blended(200, 1).int()).abs().max() <= 1
    boxes_only = {k: v for k, v in found.items() if k != "masks"}
    plain = torchvision.io.decode_png(torch.frombuffer(bytearray(detections_png(image, boxes_only, CLASSES)),
                                                       dtype=torch.uint8))
    assert torch.equal(plain[:, 65, 40], image[:, 65, 40])
