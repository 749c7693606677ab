"""Detections in the network's input frame -> the original image's: boxes and the mask grids over them."""
from __future__ import annotations

from torch import Tensor

from ...data.transforms.box_mapping import boxes_to_original

# the grid dimensions a flip of the image reverses in every box's M x M mask grid
_FLIPPED_GRID_DIMS = {"horizontal": (-1,), "vertical": (-2,), "diagonal": (-2, -1)}


def mask_probs_to_original(mask_probs: Tensor, img_meta: dict) -> Tensor:
    """Mask grids ``[K, M, M]`` over boxes of the (possibly flipped) input frame -> over the same boxes
    in the original image.

    A grid spans its box, so resizing leaves it as it is; a flip of the image flips every
    box's grid the same way, which is undone here (``flip_direction`` horizontal, vertical
    or diagonal).
    """
    if not img_meta.get("flip"):
        return mask_probs
    direction = img_meta.get("flip_direction")
    if direction not in _FLIPPED_GRID_DIMS:
        raise ValueError(f"cannot undo a {direction!r} flip (only {', '.join(_FLIPPED_GRID_DIMS)})")
    return mask_probs.flip(_FLIPPED_GRID_DIMS[direction])


def detections_to_original(result: dict[str, Tensor], img_meta: dict) -> dict[str, Tensor]:
    """One image's detections (``boxes [K, 4]``, ``scores``, ``labels``, optionally ``mask_probs [K, M, M]``)
    in its input frame -> the same in original-image pixels: boxes un-flipped, divided by ``scale_factor``
    and clipped to ``ori_shape`` (``raydet.data.transforms.boxes_to_original``), mask grids un-flipped."""
    original = dict(result, boxes=boxes_to_original(result["boxes"], img_meta))
    if "mask_probs" in result:
        original["mask_probs"] = mask_probs_to_original(result["mask_probs"], img_meta)
    return original
