"""``RandomFlip``: horizontal / vertical / diagonal flips of image, boxes and masks."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

from ...registry import TRANSFORMS
from ..sample import Sample
from .base import Transform

Direction = Literal["horizontal", "vertical", "diagonal"]


def flip_boxes(boxes: torch.Tensor, img_shape: tuple[int, int], direction: str) -> torch.Tensor:
    """Flip ``[N, 4]`` x1y1x2y2 boxes inside an image of ``img_shape`` ``(h, w)``; flipping twice is the identity."""
    xyxy = tv_tensors.BoundingBoxFormat.XYXY
    if direction in ("horizontal", "diagonal"):
        boxes = F.horizontal_flip_bounding_boxes(boxes, format=xyxy, canvas_size=img_shape)
    if direction in ("vertical", "diagonal"):
        boxes = F.vertical_flip_bounding_boxes(boxes, format=xyxy, canvas_size=img_shape)
    return boxes


def flip_image(img: torch.Tensor, direction: str) -> torch.Tensor:
    """Flip a ``[..., H, W]`` image (or ``[N, H, W]`` masks: flipping a mask is flipping its pixels)."""
    if direction in ("horizontal", "diagonal"):
        img = F.horizontal_flip_image(img)
    if direction in ("vertical", "diagonal"):
        img = F.vertical_flip_image(img)
    return img


@TRANSFORMS.register()
class RandomFlip(Transform):
    """Flip with probability ``flip_ratio``; records ``flip`` and ``flip_direction``.

    Args:
        flip_ratio: probability of flipping (0 in test pipelines: records ``flip: false``;
            1 for a flipped test-time view).
        direction: the flip, or a list to choose from uniformly when flipping
            (aerial imagery: ``[horizontal, vertical, diagonal]``).
    """

    def __init__(self, flip_ratio: float = 0.5, direction: Direction | list[Direction] = "horizontal"):
        if not 0.0 <= flip_ratio <= 1.0:
            raise ValueError(f"flip_ratio must be in [0, 1], got {flip_ratio}")
        self.flip_ratio = flip_ratio
        self.direction = direction
        self._directions = [direction] if isinstance(direction, str) else list(direction)
        if not self._directions:
            raise ValueError("direction must name at least one flip")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.flip_ratio == 0.0 or rng.random() >= self.flip_ratio:
            return sample
        direction = self._directions[int(rng.integers(len(self._directions)))]
        sample.img = flip_image(sample.img, direction)
        sample.boxes = flip_boxes(sample.boxes, sample.img_shape, direction)
        sample.map_masks(lambda masks: flip_image(masks, direction))
        sample.flip, sample.flip_direction = True, direction
        return sample
