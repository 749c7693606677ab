"""Per-box mask grids -> binary instance masks of the whole image."""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image

# masks pasted at once: bounds the float copies of the image (chunk x H x W) that pasting makes
PASTE_CHUNK = 16


def paste_masks(mask_probs: Tensor, boxes: Tensor, image_shape: tuple[int, int], threshold: float) -> Tensor:
    """Paste each ``M x M`` probability grid of ``mask_probs [K, M, M]`` over its box of ``boxes [K, 4]``
    (x1y1x2y2, pixels of the image) into an image of ``image_shape`` ``(h, w)`` and keep the pixels at or
    above ``threshold``: bool ``[K, h, w]``.

    The pasting is torchvision's (``paste_masks_in_image``: the grid padded by one cell, resized
    bilinearly to the integer box), so the masks are those torchvision's Mask R-CNN returns, thresholded.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    masks = torch.zeros((len(boxes), height, width), dtype=torch.bool, device=boxes.device)
    for start in range(0, len(boxes), PASTE_CHUNK):
        chunk = slice(start, start + PASTE_CHUNK)
        pasted = paste_masks_in_image(mask_probs[chunk, None], boxes[chunk], (height, width))
        masks[chunk] = pasted[:, 0] >= threshold
    return masks
