"""A sample: one decoded image with its boxes (and instance masks) and the geometry the transforms applied to it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torchvision.transforms.v2.functional as F

from .image_io import load_rgb
from .masks import decode_masks
from .problems import ProblemReport
from .records import Record


@dataclass
class Sample:
    """What transforms receive and return (they may modify it in place).

    Attributes:
        img: ``[3, H, W]`` uint8 RGB as decoded; float32 after ``Normalize``.
        boxes: ``[N, 4]`` float32 x1, y1, x2, y2 in the current image's pixels.
        labels: ``[N]`` int64 0-based class indices.
        ignore: ``[N]`` bool, crowd / difficult boxes (kept in step with the others).
        image_id: the record's image id.
        ori_shape: ``(h, w)`` of the decoded original image.
        img_shape: ``(h, w)`` after resizing / cropping, before padding.
        pad_shape: ``(h, w)`` after ``Pad`` (equal to ``img_shape`` without it).
        scale_factor: ``[w_scale, h_scale, w_scale, h_scale]``: resized = original * scale.
        flip: whether the image was flipped.
        flip_direction: ``"horizontal"``, ``"vertical"``, ``"diagonal"`` or ``None``.
        masks: ``[N, H, W]`` uint8 (0 / 1) instance masks in step with ``boxes``, in the current image's
            frame (the same ``H, W`` as ``img``, padding included); ``None`` without masks.
    """

    img: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    ignore: torch.Tensor
    image_id: int
    ori_shape: tuple[int, int]
    img_shape: tuple[int, int]
    pad_shape: tuple[int, int]
    scale_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    flip: bool = False
    flip_direction: str | None = None
    masks: torch.Tensor | None = None

    @property
    def height(self) -> int:
        return int(self.img.shape[-2])

    @property
    def width(self) -> int:
        return int(self.img.shape[-1])

    def keep_boxes(self, keep: torch.Tensor) -> None:
        """Keep only the boxes where ``keep`` (``[N]`` bool) is true, with their labels, flags and masks."""
        self.boxes, self.labels, self.ignore = self.boxes[keep], self.labels[keep], self.ignore[keep]
        self.map_masks(lambda masks: masks[keep])

    def map_masks(self, geometry: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace ``masks`` (``[N, H, W]``) by ``geometry(masks)`` when the sample has masks."""
        if self.masks is not None:
            self.masks = geometry(self.masks)

    def non_empty_masks(self) -> torch.Tensor:
        """``[N]`` bool: which instances have at least one mask pixel (all of them without masks)."""
        if self.masks is None:
            return torch.ones(len(self.boxes), dtype=torch.bool)
        return masks_with_pixels(self.masks)


def masks_with_pixels(masks: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: which of ``[N, H, W]`` masks have at least one non-zero pixel."""
    return masks.flatten(1).ne(0).any(dim=1)


def load_sample(record: Record, problems: ProblemReport | None = None, with_masks: bool = True) -> Sample:
    """Read and decode a record's image (and its RLE masks) into a ``Sample`` (raises ``ImageError``).

    When the decoded size differs from the annotated one (e.g. an EXIF rotation
    the annotation tool did not apply) the decoded size wins, boxes are clipped
    to it, masks cropped or padded with 0 to it (bottom/right), instances left
    without area or mask pixels dropped, and a ``size_mismatch`` is reported to
    ``problems``.  ``with_masks: false`` leaves the masks undecoded (``masks``
    ``None``: an evaluation pipeline has no use for them).
    """
    img = load_rgb(record["path"])
    height, width = int(img.shape[-2]), int(img.shape[-1])
    boxes = torch.from_numpy(record["boxes"].copy())
    mismatch = record["height"] > 0 and (height, width) != (record["height"], record["width"])  # 0: not known
    if mismatch:
        if problems is not None:
            problems.add("size_mismatch", f"image {record['image_id']}",
                         f"decoded {width}x{height}, annotated {record['width']}x{record['height']}")
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    sample = Sample(
        img=img, boxes=boxes,
        labels=torch.from_numpy(record["labels"].copy()), ignore=torch.from_numpy(record["ignore"].copy()),
        image_id=int(record["image_id"]),
        ori_shape=(height, width), img_shape=(height, width), pad_shape=(height, width),
        masks=_record_masks(record, height, width) if with_masks else None,
    )
    if mismatch:
        has_area = (sample.boxes[:, 2] > sample.boxes[:, 0]) & (sample.boxes[:, 3] > sample.boxes[:, 1])
        sample.keep_boxes(has_area & sample.non_empty_masks())
    return sample


def _record_masks(record: Record, height: int, width: int) -> torch.Tensor | None:
    """The record's RLE masks decoded to ``[N, height, width]`` uint8 (cropped or zero-padded bottom/right
    from the annotated size), or ``None`` for a record without masks."""
    if record.get("masks") is None:
        return None
    masks = torch.from_numpy(decode_masks(record["masks"], record["height"], record["width"]))
    masks = masks[:, :height, :width]
    return F.pad_mask(masks, [0, 0, width - masks.shape[-1], height - masks.shape[-2]])
