"""FCOS target assignment: points inside a box's centre region and in their level's size range."""
from __future__ import annotations

import torch
from torch import Tensor

from ...registry import TASK_UTILS
from .max_iou_assigner import NEGATIVE


@TASK_UTILS.register()
class CenterSamplingAssigner:
    """Assigns FCOS points (square priors, side = stride) to ground-truth boxes.

    A point is a candidate for a box when (1) it lies within ``center_sampling_radius``
    strides of the box centre (Chebyshev distance), (2) it lies inside the box and
    (3) its largest distance to the box sides is within its level's
    ``regress_ranges`` entry ``(lower, upper)`` (exclusive).  Among several
    candidate boxes the smallest wins.  The rules and their order are torchvision's
    FCOS (its ranges are ``4 * stride .. 8 * stride``, open at both ends).

    Args:
        regress_ranges: ``(lower, upper)`` per level; YAML ``.inf`` is infinity.
        center_sampling_radius: in strides.
    """

    def __init__(self, regress_ranges: list[tuple[float, float]], center_sampling_radius: float = 1.5):
        self.regress_ranges = [tuple(map(float, r)) for r in regress_ranges]
        self.center_sampling_radius = center_sampling_radius

    def assign(self, gt_boxes: Tensor, priors: Tensor, num_priors_per_level: list[int]) -> Tensor:
        """``[N]`` int64: the ground-truth index of each prior, or ``NEGATIVE``.

        ``gt_boxes [M, 4]``, ``priors [N, 4]`` (all levels, concatenated in order),
        ``num_priors_per_level``: how many of ``priors`` belong to each level.
        """
        if len(num_priors_per_level) != len(self.regress_ranges):
            raise ValueError(f"{len(num_priors_per_level)} levels but {len(self.regress_ranges)} regress_ranges")
        if gt_boxes.numel() == 0:
            return torch.full((priors.shape[0],), NEGATIVE, dtype=torch.int64, device=priors.device)
        gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [M, 2]
        centers = (priors[:, :2] + priors[:, 2:]) / 2  # [N, 2]
        prior_sizes = priors[:, 2] - priors[:, 0]
        near_center = (centers[:, None, :] - gt_centers[None, :, :]).abs_().max(dim=2).values \
            < self.center_sampling_radius * prior_sizes[:, None]
        x, y = centers.unsqueeze(dim=2).unbind(dim=1)  # [N, 1]
        x0, y0, x1, y1 = gt_boxes.unsqueeze(dim=0).unbind(dim=2)  # [1, M]
        distances = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)  # [N, M, 4]
        candidate = near_center & (distances.min(dim=2).values > 0)
        counts = torch.as_tensor(num_priors_per_level, device=priors.device)
        ranges = torch.as_tensor(self.regress_ranges, dtype=priors.dtype, device=priors.device)
        lower, upper = ranges.repeat_interleave(counts, dim=0).unbind(dim=1)
        max_distance = distances.max(dim=2).values
        candidate &= (max_distance > lower[:, None]) & (max_distance < upper[:, None])
        gt_areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        preference = candidate.to(torch.float32) * (1e8 - gt_areas[None, :])
        best, assigned = preference.max(dim=1)
        assigned[best < 1e-5] = NEGATIVE
        return assigned
