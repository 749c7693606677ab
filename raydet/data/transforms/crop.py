"""``RandomCrop``: crop a random window; boxes shifted, clipped, and dropped when nothing is left (masks cropped)."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from ...registry import TRANSFORMS
from ..sample import Sample, masks_with_pixels
from .base import Transform


def crop_boxes(boxes: torch.Tensor, top: int, left: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``[N, 4]`` moved into the crop window and clipped to it, and ``[N]`` which keep a positive area."""
    shifted = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    shifted[:, 0::2] = shifted[:, 0::2].clamp(0, width)
    shifted[:, 1::2] = shifted[:, 1::2].clamp(0, height)
    keep = (shifted[:, 2] > shifted[:, 0]) & (shifted[:, 3] > shifted[:, 1])
    return shifted, keep


@TRANSFORMS.register()
class RandomCrop(Transform):
    """Crop a random window (training only: the crop is not recorded for mapping back).

    Boxes are shifted into the window and clipped to it; masks are cropped with
    the image.  Boxes left with no area, and instances whose mask has no pixel left
    in the window, are dropped together with their labels, ignore flags and masks.

    Args:
        crop_size: ``[height, width]`` in pixels (``absolute``), as fractions of the
            image (``relative``), or the smallest fractions of a uniformly drawn size
            (``relative_range``: each side in ``[fraction, 1]``).
        crop_type: how ``crop_size`` is read.
        allow_negative_crop: accept a window that keeps none of the (non-ignored)
            boxes; otherwise up to ``max_tries`` windows are tried and the image is
            left uncropped if none keeps a box.
        max_tries: windows tried before giving up.
    """

    def __init__(self, crop_size: list[float],
                 crop_type: Literal["absolute", "relative", "relative_range"] = "absolute",
                 allow_negative_crop: bool = False, max_tries: int = 10):
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be [height, width] > 0, got {crop_size!r}")
        if crop_type != "absolute" and max(crop_size) > 1:
            raise ValueError(f"crop_type {crop_type!r} takes fractions in (0, 1], got {crop_size!r}")
        self.crop_size = crop_size
        self.crop_type = crop_type
        self.allow_negative_crop = allow_negative_crop
        self.max_tries = max_tries

    def _window_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        window_height, window_width = self.crop_size
        if self.crop_type == "relative":
            window_height, window_width = window_height * height, window_width * width
        elif self.crop_type == "relative_range":
            window_height = rng.uniform(window_height, 1.0) * height
            window_width = rng.uniform(window_width, 1.0) * width
        return max(1, min(height, int(window_height + 0.5))), max(1, min(width, int(window_width + 0.5)))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = sample.height, sample.width
        had_targets = bool((~sample.ignore).any())
        for _ in range(self.max_tries):
            crop_h, crop_w = self._window_size(height, width, rng)
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            boxes, keep = crop_boxes(sample.boxes, top, left, crop_h, crop_w)
            masks = None if sample.masks is None else F.crop_mask(sample.masks, top, left, crop_h, crop_w)
            if masks is not None:
                keep &= masks_with_pixels(masks)
            if self.allow_negative_crop or not had_targets or bool((keep & ~sample.ignore).any()):
                sample.img = F.crop_image(sample.img, top, left, crop_h, crop_w)
                sample.boxes, sample.masks = boxes, masks
                sample.keep_boxes(keep)
                sample.img_shape = sample.pad_shape = (crop_h, crop_w)
                return sample
        return sample
