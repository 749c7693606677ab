"""Box <-> regression-delta encoding ``(dx, dy, dw, dh)`` (Faster R-CNN, RetinaNet)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ...registry import TASK_UTILS


@TASK_UTILS.register()
class DeltaXYWHBBoxCoder:
    """Encodes a target box relative to a reference box as centre shift and log-scale.

    ``dx = wx * (gx - px) / pw``, ``dw = ww * log(gw / pw)`` (same for y/h): the
    formulas of torchvision's ``BoxCoder``, evaluated in the same order.

    Args:
        weights: ``(wx, wy, ww, wh)``; mmdetection writes them as ``target_stds``,
            ``weights = 1 / stds`` (Faster R-CNN's RoI head: ``(10, 10, 5, 5)``).
        clip_log_scale: upper clamp of ``dw``/``dh`` when decoding (``log(1000 / 16)``).
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 clip_log_scale: float = math.log(1000.0 / 16)):
        self.weights = tuple(float(w) for w in weights)
        self.clip_log_scale = clip_log_scale

    def encode(self, boxes: Tensor, gt_boxes: Tensor) -> Tensor:
        """Deltas ``[N, 4]`` that turn ``boxes [N, 4]`` into ``gt_boxes [N, 4]`` (both x1y1x2y2)."""
        wx, wy, ww, wh = torch.as_tensor(self.weights, dtype=boxes.dtype, device=boxes.device)
        widths = boxes[:, 2:3] - boxes[:, 0:1]
        heights = boxes[:, 3:4] - boxes[:, 1:2]
        ctr_x = boxes[:, 0:1] + 0.5 * widths
        ctr_y = boxes[:, 1:2] + 0.5 * heights
        gt_widths = gt_boxes[:, 2:3] - gt_boxes[:, 0:1]
        gt_heights = gt_boxes[:, 3:4] - gt_boxes[:, 1:2]
        gt_ctr_x = gt_boxes[:, 0:1] + 0.5 * gt_widths
        gt_ctr_y = gt_boxes[:, 1:2] + 0.5 * gt_heights
        dx = wx * (gt_ctr_x - ctr_x) / widths
        dy = wy * (gt_ctr_y - ctr_y) / heights
        dw = ww * torch.log(gt_widths / widths)
        dh = wh * torch.log(gt_heights / heights)
        return torch.cat((dx, dy, dw, dh), dim=1)

    def decode(self, boxes: Tensor, deltas: Tensor) -> Tensor:
        """Boxes ``[N, 4k]`` from reference ``boxes [N, 4]`` and ``deltas [N, 4k]`` (k boxes per reference)."""
        dtype = torch.promote_types(boxes.dtype, deltas.dtype)  # float32 anchors keep fp16 deltas precise
        boxes, deltas = boxes.to(dtype), deltas.to(dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.clip_log_scale)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.clip_log_scale)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        decoded = torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h,
                               pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2)
        return decoded.flatten(1)
