"""``Normalize``: uint8 RGB -> float32 ``(img - mean) / std``."""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from ...registry import TRANSFORMS
from ..sample import Sample
from .base import Transform


@TRANSFORMS.register()
class Normalize(Transform):
    """Convert to float32 and normalise per channel.

    Images are decoded as RGB.  ``mean`` and ``std`` are in the output channel
    order; ``to_bgr: true`` reverses the channels first, for backbones trained
    on BGR input (mmdetection's caffe-style configs, which say ``to_rgb=False``
    because OpenCV loads BGR).

    Args:
        mean: per-channel mean in 0..255 pixel units, e.g. ``[123.675, 116.28, 103.53]``.
        std: per-channel standard deviation, e.g. ``[58.395, 57.12, 57.375]``.
        to_bgr: reverse the channel order before normalising.
    """

    def __init__(self, mean: list[float], std: list[float], to_bgr: bool = False):
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need three values each (std > 0), got {mean!r}, {std!r}")
        self.mean = mean
        self.std = std
        self.to_bgr = to_bgr

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample.img.flip(0) if self.to_bgr else sample.img
        # a new float copy (never the sample's own tensor, which another pipeline may share), normalised in
        # place: one 1333 x 800 float image less to allocate and write than torchvision's normalize
        sample.img = F.normalize_image(img.to(torch.float32, copy=True), self.mean, self.std, inplace=True)
        return sample
