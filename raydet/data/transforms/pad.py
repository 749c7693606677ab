"""``Pad``: pad the image bottom/right to a size divisor or a fixed size."""
from __future__ import annotations

import math

import numpy as np
import torchvision.transforms.v2.functional as F

from ...registry import TRANSFORMS
from ..sample import Sample
from .base import Transform


@TRANSFORMS.register()
class Pad(Transform):
    """Pad bottom/right (boxes do not move; masks are padded with 0); records ``pad_shape``.

    Args:
        size_divisor: pad height and width up to a multiple of this.
        size: pad to exactly ``[height, width]`` instead (must not be smaller than the image).
        pad_val: fill value (0 after ``Normalize`` is the mean colour).
    """

    def __init__(self, size_divisor: int | None = 32, size: list[int] | None = None, pad_val: float = 0.0):
        if (size_divisor is None) == (size is None):
            raise ValueError("give exactly one of size_divisor and size")
        if size_divisor is not None and size_divisor <= 0:
            raise ValueError(f"size_divisor must be positive, got {size_divisor}")
        self.size_divisor = size_divisor
        self.size = size
        self.pad_val = pad_val

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` after padding an image of ``height`` x ``width``."""
        if self.size is not None:
            pad_h, pad_w = self.size
            if pad_h < height or pad_w < width:
                raise ValueError(f"Pad size {self.size} is smaller than the {height}x{width} image")
            return pad_h, pad_w
        return (math.ceil(height / self.size_divisor) * self.size_divisor,
                math.ceil(width / self.size_divisor) * self.size_divisor)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = sample.height, sample.width
        pad_h, pad_w = self.padded_shape(height, width)
        if (pad_h, pad_w) != (height, width):
            sample.img = F.pad_image(sample.img, [0, 0, pad_w - width, pad_h - height], fill=self.pad_val)
            sample.map_masks(lambda masks: F.pad_mask(masks, [0, 0, pad_w - width, pad_h - height]))
        sample.pad_shape = (pad_h, pad_w)
        return sample
