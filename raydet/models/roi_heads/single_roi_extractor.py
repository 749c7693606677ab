"""RoIAlign over an FPN, each RoI pooled from the level that matches its scale."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from ...registry import MODELS


@MODELS.register()
class SingleRoIExtractor(nn.Module):
    """Pools ``output_size x output_size`` features for each RoI from one pyramid level.

    An RoI of scale ``s = sqrt(w * h)`` belongs to FPN level ``k = floor(canonical_level +
    log2(s / canonical_scale) + 1e-6)`` (level ``k`` has stride ``2**k``) and is pooled
    from the level of ``featmap_strides`` nearest to ``k`` (the finer on a tie): the
    FPN paper's rule as torchvision's ``MultiScaleRoIAlign`` applies it, which clamps
    ``k`` to the levels it has.  mmdetection's ``finest_scale: 56`` is the same rule for
    strides 4..32.  Strides need not be consecutive (``[8, 32]``).

    Args:
        featmap_strides: strides of the levels to pool from (the first ``len`` neck outputs).
        output_size: pooled size.
        sampling_ratio: RoIAlign sampling points per bin side (0: adaptive).
            torchvision uses 2, mmdetection 0.
        aligned: RoIAlign's half-pixel correction (torchvision: false, mmdetection: true).
    """

    def __init__(self, featmap_strides: list[int], output_size: int = 7, sampling_ratio: int = 2,
                 aligned: bool = False, canonical_scale: float = 224.0, canonical_level: int = 4):
        super().__init__()
        powers_of_two = all(s > 0 and s & (s - 1) == 0 for s in featmap_strides)
        if not featmap_strides or not powers_of_two or featmap_strides != sorted(set(featmap_strides)):
            raise ValueError(f"featmap_strides must be increasing powers of two, got {featmap_strides}")
        self.featmap_strides = list(featmap_strides)
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.levels = [s.bit_length() - 1 for s in featmap_strides]  # log2(stride): the FPN level of each

    def map_levels(self, rois: Tensor) -> Tensor:
        """``[R]`` int64: index into ``featmap_strides`` for each RoI of ``rois [R, 5]``."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        wanted = torch.floor(self.canonical_level + torch.log2(scale / self.canonical_scale)
                             + torch.tensor(1e-6, dtype=scale.dtype))  # [R] FPN level
        available = torch.tensor(self.levels, dtype=wanted.dtype, device=wanted.device)  # [L]
        return (wanted[:, None] - available[None, :]).abs().argmin(dim=1)  # the first (finer) of equally near ones

    def forward(self, feats: list[Tensor], rois: Tensor) -> Tensor:
        """``rois [R, 5]`` (image index, x1, y1, x2, y2) -> ``[R, C, output_size, output_size]``."""
        feats = feats[:len(self.featmap_strides)]
        size = (self.output_size, self.output_size)
        if len(feats) == 1:
            return self.roi_align(feats[0], rois, size, 1.0 / self.featmap_strides[0]).contiguous()
        levels = self.map_levels(rois)
        pooled = rois.new_zeros((rois.shape[0], feats[0].shape[1], *size), dtype=feats[0].dtype)
        for level, (feat, stride) in enumerate(zip(feats, self.featmap_strides)):
            indices = torch.where(levels == level)[0]
            pooled[indices] = self.roi_align(feat, rois[indices], size, 1.0 / stride)
        return pooled

    def roi_align(self, feat: Tensor, rois: Tensor, size: tuple[int, int], spatial_scale: float) -> Tensor:
        """RoIAlign of ``rois [R, 5]`` on one level ``feat [N, C, H, W]`` -> ``[R, C, *size]``."""
        return roi_align(feat, rois, size, spatial_scale, self.sampling_ratio, self.aligned)
