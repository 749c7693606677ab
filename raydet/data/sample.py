"""A sample: one decoded image with its boxes and the geometry the transforms applied to it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .image_io import load_rgb
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

    @property
    def height(self) -> int:
        return int(self.img.shape[-2])

    @property
    def width(self) -> int:
        return int(self.img.shape[-1])

    def keep_boxes(self, keep: torch.Tensor) -> None:
        """Keep only the boxes where ``keep`` (``[N]`` bool) is true, with their labels and flags."""
        self.boxes, self.labels, self.ignore = self.boxes[keep], self.labels[keep], self.ignore[keep]


def load_sample(record: Record, problems: ProblemReport | None = None) -> Sample:
    """Read and decode a record's image into a ``Sample`` (raises ``ImageError``).

    When the decoded size differs from the annotated one (e.g. an EXIF rotation
    the annotation tool did not apply) the decoded size wins, boxes are clipped
    to it and a ``size_mismatch`` is reported to ``problems``.
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
    )
    if mismatch:
        sample.keep_boxes((sample.boxes[:, 2] > sample.boxes[:, 0]) & (sample.boxes[:, 3] > sample.boxes[:, 1]))
    return sample
