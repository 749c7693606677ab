"""RoIAlign as a weighted gather of feature vectors: ``torchvision.ops.roi_align``'s function, faster on a CPU.

Each output bin of RoIAlign averages ``sampling_ratio**2`` bilinear samples, each a
weighted sum of 4 feature-map cells: a sparse linear map from the feature map to the
pooled features, with weights that depend only on the RoIs.  Computed here as one
``F.embedding_bag`` over the feature map laid out ``[N * H * W, C]`` (a bag of
``4 * sampling_ratio**2`` weighted rows per bin), the channels of a cell are
contiguous, so forward and backward run vectorised over them; torchvision's CPU
kernel recomputes the interpolation for every channel and its backward scatters one
value at a time (on a CPU core its backward was 15% of a Faster R-CNN training step).

The sample positions and weights follow torchvision's kernel step by step (same
float32 arithmetic, same border rules); only the order of the sums differs.

``accel.gather_roi_align``: ``gather_in_roi_extractors`` turns each
``SingleRoIExtractor`` of a model into a ``GatherRoIExtractor``, which pools this
way on the CPU (with ``sampling_ratio > 0``) and with torchvision's kernel elsewhere.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..models.roi_heads import SingleRoIExtractor
from .specialise import specialise


def _axis_samples(start: Tensor, bin_size: Tensor, bins: int, grid: int, size: int) -> tuple[Tensor, Tensor]:
    """Along one axis, for every RoI ``[R]``, bin and sample: the two cells read and their weights,
    ``[R, bins, grid, 2]`` each (weights 0 where torchvision skips a sample outside the map)."""
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)
    offsets = (torch.arange(grid, device=start.device, dtype=start.dtype) + 0.5)
    # torchvision: start + bin * bin_size + (i + .5) * bin_size / grid, left to right
    coords = (start[:, None, None] + bin_index[None, :, None] * bin_size[:, None, None]
              + offsets[None, None, :] * bin_size[:, None, None] / grid)
    inside = (coords >= -1.0) & (coords <= size)
    coords = coords.clamp(min=0)
    low = coords.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    coords = torch.where(at_edge, low, coords)
    frac = coords - low
    low = low.long()
    high = torch.where(at_edge, low, low + 1)
    weights = torch.stack((1.0 - frac, frac), dim=-1) * inside[..., None]
    return torch.stack((low, high), dim=-1), weights


def gather_roi_align(input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                     sampling_ratio: int, aligned: bool = False) -> Tensor:
    """``torchvision.ops.roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)``.

    Args:
        input: feature map ``[N, C, H, W]``.
        rois: ``[R, 5]`` (image index, x1, y1, x2, y2) in input-image pixels.
        sampling_ratio: samples per bin side; must be > 0 (torchvision's adaptive 0 is not offered).
    Returns:
        ``[R, C, output_size[0], output_size[1]]``.
    """
    if sampling_ratio <= 0:
        raise ValueError(f"gather_roi_align needs sampling_ratio > 0, got {sampling_ratio}")
    n, channels, height, width = input.shape
    pooled_h, pooled_w = output_size
    num_rois = rois.shape[0]
    if num_rois == 0:
        return input.new_zeros((0, channels, pooled_h, pooled_w))
    rois = rois.to(input.dtype)
    offset = 0.5 if aligned else 0.0
    start_x = rois[:, 1] * spatial_scale - offset
    start_y = rois[:, 2] * spatial_scale - offset
    roi_w = (rois[:, 3] * spatial_scale - offset) - start_x
    roi_h = (rois[:, 4] * spatial_scale - offset) - start_y
    if not aligned:  # malformed RoIs are forced to 1x1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    grid = sampling_ratio
    y_cells, y_weights = _axis_samples(start_y, roi_h / pooled_h, pooled_h, grid, height)  # [R, ph, g, 2]
    x_cells, x_weights = _axis_samples(start_x, roi_w / pooled_w, pooled_w, grid, width)  # [R, pw, g, 2]
    image_base = rois[:, 0].long() * (height * width)  # [R]
    # bag of bin (r, ph, pw): samples (iy, ix) x corners (y low/high, x low/high), torchvision's order
    cells = (image_base[:, None, None, None, None, None, None]
             + y_cells[:, :, None, :, None, :, None] * width
             + x_cells[:, None, :, None, :, None, :])
    weights = y_weights[:, :, None, :, None, :, None] * x_weights[:, None, :, None, :, None, :]
    bag = grid * grid * 4
    table = input.permute(0, 2, 3, 1).contiguous().view(n * height * width, channels)  # rows: cells
    pooled = F.embedding_bag(cells.reshape(-1, bag), table, per_sample_weights=weights.reshape(-1, bag), mode="sum")
    pooled = pooled / (grid * grid)
    return pooled.view(num_rois, pooled_h, pooled_w, channels).permute(0, 3, 1, 2)


class GatherRoIExtractor(SingleRoIExtractor):
    """A ``SingleRoIExtractor`` whose RoIAlign is ``gather_roi_align`` on the CPU (``sampling_ratio > 0``)."""

    def roi_align(self, feat: Tensor, rois: Tensor, size: tuple[int, int], spatial_scale: float) -> Tensor:
        """RoIAlign of ``rois [R, 5]`` on one level ``feat [N, C, H, W]`` -> ``[R, C, *size]``."""
        if self.sampling_ratio > 0 and feat.device.type == "cpu":
            return gather_roi_align(feat, rois, size, spatial_scale, self.sampling_ratio, self.aligned)
        return super().roi_align(feat, rois, size, spatial_scale)


def gather_in_roi_extractors(model: nn.Module) -> int:
    """Turn every ``SingleRoIExtractor`` of ``model`` into a ``GatherRoIExtractor``, in place; returns how many."""
    extractors = [module for module in model.modules() if type(module) is SingleRoIExtractor]
    for extractor in extractors:
        specialise(extractor, GatherRoIExtractor)
    return len(extractors)
