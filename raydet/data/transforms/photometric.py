"""``PhotoMetricDistortion``: random brightness, contrast, saturation, hue and channel order."""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from ...registry import TRANSFORMS
from ..sample import Sample
from .base import Transform


@TRANSFORMS.register()
class PhotoMetricDistortion(Transform):
    """mmdetection's photometric distortion on the uint8 image (put it before ``Normalize``).

    Each step runs with probability 1/2, in this order: brightness (add a value
    in ``±brightness_delta``), contrast (first or last, chosen at random),
    saturation, hue (shift by up to ``±hue_delta`` degrees), a random channel
    permutation.  Boxes are untouched.  The hue step (``adjust_hue``) costs most,
    about 16 ms for a 400 x 400 image on one core: when a pipeline upscales,
    put this transform before ``Resize``.
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18):
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample.img
        if img.dtype != torch.uint8:
            raise TypeError("PhotoMetricDistortion needs the uint8 image: put it before Normalize")
        if rng.random() < 0.5:
            delta = int(rng.integers(-self.brightness_delta, self.brightness_delta + 1))
            img = (img.to(torch.int16) + delta).clamp_(0, 255).to(torch.uint8)
        contrast_first = rng.random() < 0.5
        if contrast_first and rng.random() < 0.5:
            img = F.adjust_contrast_image(img, float(rng.uniform(*self.contrast_range)))
        if rng.random() < 0.5:
            img = F.adjust_saturation_image(img, float(rng.uniform(*self.saturation_range)))
        if rng.random() < 0.5:
            img = F.adjust_hue_image(img, float(rng.uniform(-self.hue_delta, self.hue_delta)) / 360.0)
        if not contrast_first and rng.random() < 0.5:
            img = F.adjust_contrast_image(img, float(rng.uniform(*self.contrast_range)))
        if rng.random() < 0.5:
            img = img[torch.from_numpy(rng.permutation(3))]
        sample.img = img
        return sample
