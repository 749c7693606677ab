"""Pictures: detections drawn above the score threshold, ground truth beside the detections."""
from __future__ import annotations

import io

import numpy as np
import torch
import torchvision
from PIL import Image

from raydet.visualization import comparison_png, draw_detections

CLASSES = ["rectangle", "ellipse"]


def test_only_detections_at_or_above_the_threshold_are_drawn():
    image = torch.full((3, 200, 300), 128, dtype=torch.uint8)
    boxes = torch.tensor([[20.0, 40.0, 120.0, 140.0], [180.0, 60.0, 280.0, 180.0]])
    drawn = draw_detections(image, boxes, torch.tensor([0, 1]), torch.tensor([0.9, 0.2]), CLASSES, 0.3)
    assert drawn.shape == image.shape and drawn.dtype == torch.uint8
    assert not torch.equal(drawn[:, 100, 20], image[:, 100, 20])  # the left edge of the kept box
    assert torch.equal(drawn[:, 120, 180], image[:, 120, 180])  # the dropped box: untouched
    truth = draw_detections(image, boxes, torch.tensor([0, 1]), None, CLASSES)  # ground truth: every box
    assert not torch.equal(truth[:, 120, 180], image[:, 120, 180])
    empty = draw_detections(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0), CLASSES)
    assert torch.equal(empty, image)


def test_comparison_puts_ground_truth_left_and_detections_right_a_row_per_image():
    images = [torch.full((3, 100, 150), 90, dtype=torch.uint8), torch.full((3, 300, 120), 200, dtype=torch.uint8)]
    truth = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([1])}
    found = {"boxes": torch.tensor([[12.0, 11.0, 61.0, 58.0]]), "labels": torch.tensor([1]),
             "scores": torch.tensor([0.8])}
    picture = Image.open(io.BytesIO(comparison_png([(image, truth, found) for image in images], CLASSES, size=256)))
    header, padding = 16, 6  # a title strip at least 16 px tall, make_grid padding
    assert picture.size == (2 * 256 + 3 * padding, 2 * (256 + header) + 3 * padding)
    grid = torchvision.transforms.v2.functional.pil_to_tensor(picture.convert("RGB"))
    left, right = grid[:, padding + header: padding + header + 256, padding: padding + 256], \
        grid[:, padding + header: padding + header + 256, 2 * padding + 256: 2 * padding + 512]
    assert not torch.equal(left, right)  # the two panels differ where their boxes and captions do


def test_read_only_arrays_of_records_are_copied_before_torch_wraps_them(monkeypatch):
    # records read back from the Arrow table hold read-only arrays; torch warns (once a process) when it wraps one
    wrapped_arrays = []

    def writable_only(wrap):
        def checked(value, *args, **kwargs):
            assert not isinstance(value, np.ndarray) or value.flags.writeable, "a read-only array reached torch"
            if isinstance(value, np.ndarray):
                wrapped_arrays.append(value)
            return wrap(value, *args, **kwargs)
        return checked

    for name in ("as_tensor", "from_numpy"):
        monkeypatch.setattr(torch, name, writable_only(getattr(torch, name)))
    boxes = np.array([[1, 1, 20, 20]], np.float32)
    labels = np.array([0])
    for array in (boxes, labels):
        array.setflags(write=False)
    png = comparison_png([(torch.zeros(3, 32, 32, dtype=torch.uint8), {"boxes": boxes, "labels": labels},
                           {"boxes": boxes, "labels": labels, "scores": np.array([0.9], np.float32)})], ["a"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert wrapped_arrays  # the check above saw the arrays torch wrapped
