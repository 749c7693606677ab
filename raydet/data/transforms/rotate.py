"""``RandomRotate90``: quarter-turn rotations of image, boxes and masks (overhead imagery has no "up")."""
from __future__ import annotations

import numpy as np
import torch

from ...registry import TRANSFORMS
from ..sample import Sample
from .base import Transform


def rotate90_boxes(boxes: torch.Tensor, img_shape: tuple[int, int], quarter_turns: int) -> torch.Tensor:
    """``[N, 4]`` x1y1x2y2 boxes of an ``(h, w)`` image turned ``quarter_turns`` x 90 degrees counter-clockwise,
    as ``torch.rot90(img, quarter_turns, dims=(-2, -1))`` turns its pixels."""
    height, width = img_shape
    for _ in range(quarter_turns % 4):  # one counter-clockwise turn: (x, y) -> (y, w - x), then w and h swap
        x1, y1, x2, y2 = boxes.unbind(dim=1)
        boxes = torch.stack([y1, width - x2, y2, width - x1], dim=1)
        height, width = width, height
    return boxes


@TRANSFORMS.register()
class RandomRotate90(Transform):
    """With probability ``prob`` turn the image by 90, 180 or 270 degrees (one chosen uniformly).

    Training only: the turn is not recorded, so test pipelines must not use it.
    With ``prob: 0.75`` every turn (none included) is equally likely; followed by
    ``RandomFlip`` (``flip_ratio: 0.5``, horizontal) a sample sees each of the
    eight symmetries of the square equally often.
    """

    def __init__(self, prob: float = 0.75):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = prob

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.prob == 0.0 or rng.random() >= self.prob:
            return sample
        turns = int(rng.integers(1, 4))
        sample.boxes = rotate90_boxes(sample.boxes, sample.img_shape, turns)
        sample.img = torch.rot90(sample.img, turns, dims=(-2, -1)).contiguous()
        sample.map_masks(lambda masks: torch.rot90(masks, turns, dims=(-2, -1)).contiguous())
        if turns % 2:
            sample.img_shape = sample.img_shape[::-1]
            sample.pad_shape = sample.pad_shape[::-1]
        return sample
