"""``Resize``: keep-ratio (mmdetection's ``img_scale``), exact, or by a factor of the image's own size."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from ...registry import TRANSFORMS
from ..sample import Sample
from .base import Transform


def rescaled_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Keep-ratio target ``(h, w)``: the largest size with long edge <= max(scale), short edge <= min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[N, h, w]`` uint8 masks -> ``[N, height, width]``, each output pixel the input pixel under its centre
    (``NEAREST_EXACT``: a mask's tight box stays within a pixel of its scaled box; ``NEAREST`` rounds
    down and shifts masks up to 1.4 px up/left)."""
    return F.resize_image(masks, [height, width], interpolation=F.InterpolationMode.NEAREST_EXACT)


@TRANSFORMS.register()
class Resize(Transform):
    """Resize the image, its boxes and its masks (nearest neighbour); records ``img_shape`` and ``scale_factor``.

    Args:
        img_scale: one scale ``[long, short]`` (e.g. ``[1333, 800]``) or several
            ``[[1333, 640], [1333, 800]]`` for multi-scale training.  With
            ``keep_ratio: false`` a scale is the exact ``[width, height]``.
        multiscale_mode: with several scales, ``range`` samples the long and short
            edges uniformly between the smallest and largest given (two scales
            needed); ``value`` picks one of the scales.
        keep_ratio: keep the aspect ratio (mmdetection's default) or stretch.
        scale_factor: instead of ``img_scale``, resize every image by this factor of its
            own size, or by a factor drawn uniformly from ``[low, high]`` (scale jitter).
            For imagery with a fixed ground sampling distance (aerial tiles of any size),
            where an object's size in pixels must not depend on the tile's size.
    """

    def __init__(self, img_scale: list[int] | list[list[int]] | None = None,
                 multiscale_mode: Literal["range", "value"] = "range", keep_ratio: bool = True,
                 scale_factor: float | list[float] | None = None):
        if (img_scale is None) == (scale_factor is None):
            raise ValueError("give one of img_scale and scale_factor")
        self.img_scale = img_scale
        self.multiscale_mode = multiscale_mode
        self.keep_ratio = keep_ratio
        self.scale_factor = scale_factor
        self._scales: list[tuple[int, int]] = []
        self._factors = (1.0, 1.0)
        if scale_factor is not None:
            factors = [scale_factor] if isinstance(scale_factor, (int, float)) else list(scale_factor)
            if len(factors) not in (1, 2) or min(factors) <= 0 or factors[0] > factors[-1]:
                raise ValueError(f"scale_factor must be a factor > 0 or [low, high], got {scale_factor!r}")
            self._factors = (float(factors[0]), float(factors[-1]))
            return
        scales = [img_scale] if img_scale and isinstance(img_scale[0], int) else img_scale
        if not scales or any(len(s) != 2 or min(s) <= 0 for s in scales):
            raise ValueError(f"img_scale must be [long, short] or a list of them, got {img_scale!r}")
        if multiscale_mode == "range" and len(scales) not in (1, 2):
            raise ValueError(f"multiscale_mode 'range' needs one or two scales, got {len(scales)}")
        self._scales = [tuple(int(v) for v in s) for s in scales]

    def _pick_scale(self, rng: np.random.Generator) -> tuple[int, int]:
        if len(self._scales) == 1:
            return self._scales[0]
        if self.multiscale_mode == "value":
            return self._scales[int(rng.integers(len(self._scales)))]
        longs = [max(s) for s in self._scales]
        shorts = [min(s) for s in self._scales]
        return int(rng.integers(min(longs), max(longs) + 1)), int(rng.integers(min(shorts), max(shorts) + 1))

    def _factor_size(self, height: int, width: int, rng: np.random.Generator | None) -> tuple[int, int]:
        low, high = self._factors
        factor = low if low == high else float(rng.uniform(low, high))
        return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = sample.height, sample.width
        if self.scale_factor is not None:
            new_h, new_w = self._factor_size(height, width, rng)
        elif self.keep_ratio:
            new_h, new_w = rescaled_size(height, width, self._pick_scale(rng))
        else:
            new_w, new_h = self._pick_scale(rng)
        if (new_h, new_w) != (height, width):
            sample.img = F.resize_image(sample.img, [new_h, new_w], antialias=True)
            sample.map_masks(lambda masks: resize_masks(masks, new_h, new_w))
        w_scale, h_scale = new_w / width, new_h / height
        factors = torch.tensor([w_scale, h_scale, w_scale, h_scale], dtype=torch.float32)
        sample.boxes = sample.boxes * factors
        sample.boxes[:, 0::2] = sample.boxes[:, 0::2].clamp(0, new_w)
        sample.boxes[:, 1::2] = sample.boxes[:, 1::2].clamp(0, new_h)
        old = sample.scale_factor
        sample.scale_factor = (old[0] * w_scale, old[1] * h_scale, old[2] * w_scale, old[3] * h_scale)
        sample.img_shape = sample.pad_shape = (new_h, new_w)
        return sample
