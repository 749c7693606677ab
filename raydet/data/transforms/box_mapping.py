"""Mapping boxes between the original image and the pipeline's output frame (via ``img_metas``)."""
from __future__ import annotations

import torch

from .flip import flip_boxes


def boxes_to_original(boxes: torch.Tensor, img_meta: dict) -> torch.Tensor:
    """Predicted ``[K, 4]`` x1y1x2y2 boxes in the network input frame -> original image pixels.

    Undoes the test pipeline's flip (in ``img_shape``) and resize (``scale_factor``)
    and clips to ``ori_shape``.  Padding needs no undoing (it is bottom/right).
    """
    if img_meta.get("flip"):
        boxes = flip_boxes(boxes, tuple(img_meta["img_shape"]), img_meta["flip_direction"])
    boxes = boxes / boxes.new_tensor(img_meta["scale_factor"])
    height, width = img_meta["ori_shape"]
    return torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                        boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)

