"""Box <-> distances from a point to the four box sides (FCOS)."""
from __future__ import annotations

import torch
from torch import Tensor

from ...registry import TASK_UTILS


@TASK_UTILS.register()
class DistancePointBBoxCoder:
    """Encodes a box as the distances ``(left, top, right, bottom)`` from a prior's centre.

    A prior is a square box around a point whose side is the level's stride (see
    ``AnchorGenerator``); with ``normalize_by_size`` the distances are in units of
    that side, so one head serves every level — torchvision's ``BoxLinearCoder``
    (mmdetection's FCOS gets the same effect with ``norm_on_bbox``).
    """

    def __init__(self, normalize_by_size: bool = True):
        self.normalize_by_size = normalize_by_size

    def _sizes(self, priors: Tensor) -> Tensor:
        widths = priors[..., 2] - priors[..., 0]
        heights = priors[..., 3] - priors[..., 1]
        return torch.stack((widths, heights, widths, heights), dim=-1)

    def encode(self, priors: Tensor, gt_boxes: Tensor) -> Tensor:
        """Distances ``[..., 4]`` from the centres of ``priors [..., 4]`` to the sides of ``gt_boxes [..., 4]``."""
        ctr_x = 0.5 * (priors[..., 0] + priors[..., 2])
        ctr_y = 0.5 * (priors[..., 1] + priors[..., 3])
        distances = torch.stack(
            (ctr_x - gt_boxes[..., 0], ctr_y - gt_boxes[..., 1],
             gt_boxes[..., 2] - ctr_x, gt_boxes[..., 3] - ctr_y),
            dim=-1,
        )
        return distances / self._sizes(priors) if self.normalize_by_size else distances

    def decode(self, priors: Tensor, distances: Tensor) -> Tensor:
        """Boxes ``[..., 4] x1y1x2y2`` from ``priors [..., 4]`` and ``distances [..., 4]``."""
        dtype = torch.promote_types(priors.dtype, distances.dtype)  # float32 priors keep fp16 outputs precise
        priors, distances = priors.to(dtype), distances.to(dtype)
        ctr_x = 0.5 * (priors[..., 0] + priors[..., 2])
        ctr_y = 0.5 * (priors[..., 1] + priors[..., 3])
        if self.normalize_by_size:
            distances = distances * self._sizes(priors)
        return torch.stack(
            (ctr_x - distances[..., 0], ctr_y - distances[..., 1],
             ctr_x + distances[..., 2], ctr_y + distances[..., 3]),
            dim=-1,
        )
