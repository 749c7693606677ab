"""Draw detections (and ground truth) on images, for MLflow's ``predictions.png`` and ``raydet.infer``."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torchvision
from PIL import ImageDraw, ImageFont
from pycocotools import mask as mask_utils
from torchvision.transforms.v2.functional import InterpolationMode, pil_to_tensor, resize, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]

#: Opacity of the class colour over a mask's pixels.
MASK_ALPHA = 0.45


def ground_truth_of(record: dict) -> dict:
    """A record's objects as the pictures take them: ``{"boxes", "labels"}`` and, when the record has masks
    (compressed RLE counts at its ``height`` x ``width``), ``"masks"``: COCO RLE dicts."""
    truth = {"boxes": record["boxes"], "labels": record["labels"]}
    if record.get("masks") is not None:
        size = [int(record["height"]), int(record["width"])]
        truth["masks"] = [{"size": size, "counts": counts} for counts in record["masks"]]
    return truth


def rle_masks(rles: Sequence[dict], shape: Sequence[int]) -> torch.Tensor:
    """COCO RLE dicts (``{"size": [h, w], "counts": bytes or str}``) -> ``[K, *shape]`` bool, each mask
    scaled to ``shape`` (nearest neighbour) when its size differs; decoded one at a time."""
    masks = torch.zeros((len(rles), *shape), dtype=torch.bool)
    for k, rle in enumerate(rles):
        mask = torch.from_numpy(mask_utils.decode(rle))[None]  # [1, h, w] uint8
        if tuple(mask.shape[1:]) != tuple(shape):
            mask = resize(mask, list(shape), interpolation=InterpolationMode.NEAREST)
        masks[k] = mask[0].bool()
    return masks


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None,
                    class_names: list[str], score_threshold: float = 0.3,
                    masks: Sequence[dict] | None = None) -> torch.Tensor:
    """``image`` uint8 ``[3,H,W]`` with ``boxes [K,4]`` (x1y1x2y2, its pixels) drawn where
    ``scores >= score_threshold``: one colour per class, lines and captions ("class score", white on the
    class's colour) sized to the image.  Captions go above their box (inside it at the top edge), highest
    score first; a caption that would cover one already placed is left out (its box stays).
    ``scores`` None: ground truth, every box, captions without a score.  ``masks``: a COCO RLE dict per box
    (any size: scaled to the image's), those of the drawn boxes filled in their class's colour, under the boxes."""
    truth = scores is None
    scores = torch.ones(len(boxes)) if truth else scores
    kept = torch.nonzero(scores >= (0.0 if truth else score_threshold)).flatten()
    kept = kept[torch.argsort(scores[kept], descending=True, stable=True)]
    boxes, labels, scores = boxes[kept].float(), labels[kept], scores[kept]
    colors = [PALETTE[int(label) % len(PALETTE)] for label in labels]
    height, width = image.shape[-2:]
    side = max(height, width)
    if masks is not None and len(kept):
        image = draw_segmentation_masks(image, rle_masks([masks[k] for k in kept.tolist()], (height, width)),
                                        alpha=MASK_ALPHA, colors=colors)
    drawn = draw_bounding_boxes(image, boxes, colors=colors, width=max(1, round(side / 300))) if len(boxes) else image
    picture = to_pil_image(drawn)
    pen = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(11, round(side / 50)))
    placed: list[tuple[int, int, int, int]] = []
    for box, label, score, color in zip(boxes.tolist(), labels.tolist(), scores.tolist(), colors):
        name = class_names[label] if label < len(class_names) else str(label)
        text = name if truth else f"{name} {score:.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left + 4, bottom - top + 4
        x = int(min(max(box[0], 0), max(width - text_w, 0)))
        for y in (int(box[1]) - text_h, int(box[1])):  # above the box, else just inside its top edge
            y = min(max(y, 0), max(height - text_h, 0))
            rect = (x, y, x + text_w, y + text_h)
            if not any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in placed):
                placed.append(rect)
                pen.rectangle(rect, fill=color)
                pen.text((x + 2 - left, y + 2 - top), text, fill="white", font=font)
                break
    return pil_to_tensor(picture)


def _tensor(values: object, dtype: type) -> torch.Tensor:
    """A tensor copy of array-like ``values`` (records' arrays may be read-only views of Arrow buffers)."""
    return torch.from_numpy(np.array(values, dtype=dtype))


def comparison_png(pictures: list[tuple[torch.Tensor, dict, dict]], class_names: list[str],
                   score_threshold: float = 0.3, size: int = 512) -> bytes:
    """One PNG: a row per image, its ground truth on the left and its detections on the right.

    Args:
        pictures: ``(image uint8 [3,H,W], ground truth {"boxes", "labels"}, detections {"boxes", "labels",
            "scores"})`` per image, boxes in the image's pixels; either may have ``"masks"``, a COCO RLE dict
            per box (``ground_truth_of``; ``raydet.engine.evaluation.Detections``), drawn filled.
        size: each panel's longer side in pixels (images are scaled to it, then drawn on, so lines and
            captions are sized for the picture as seen).
    """
    header = max(16, size // 20)
    font = ImageFont.load_default(size=header * 3 // 4)
    titles = ("ground truth", f"detections (score >= {score_threshold:g})")
    panels = []
    for image, truth, found in pictures:
        scale = size / max(image.shape[1:])
        shape = [max(1, round(image.shape[1] * scale)), max(1, round(image.shape[2] * scale))]
        resized = torchvision.transforms.v2.functional.resize(image, shape, antialias=True)
        for title, objects, scores in zip(titles, (truth, found), (None, found["scores"])):
            drawn = draw_detections(resized, _tensor(objects["boxes"], np.float32).reshape(-1, 4) * scale,
                                    _tensor(objects["labels"], np.int64),
                                    None if scores is None else _tensor(scores, np.float32),
                                    class_names, score_threshold, objects.get("masks"))
            panel = torch.full((3, header + size, size), 255, dtype=torch.uint8)
            panel[:, header: header + drawn.shape[1], : drawn.shape[2]] = drawn
            titled = to_pil_image(panel)
            ImageDraw.Draw(titled).text((2, 1), title, fill="black", font=font)
            panels.append(pil_to_tensor(titled))
    grid = make_grid(torch.stack(panels), nrow=2, padding=6, pad_value=255)
    return torchvision.io.encode_png(grid).numpy().tobytes()


def detections_png(image: torch.Tensor, found: dict, class_names: list[str], score_threshold: float = 0.3) -> bytes:
    """``image`` uint8 ``[3,H,W]`` with ``found``'s detections (``{"boxes", "labels", "scores"}`` in its
    pixels, ``"masks"`` too from a mask detector) of score ``>= score_threshold`` drawn, as PNG bytes."""
    drawn = draw_detections(image, torch.as_tensor(found["boxes"]).reshape(-1, 4), torch.as_tensor(found["labels"]),
                            torch.as_tensor(found["scores"]), class_names, score_threshold, found.get("masks"))
    return torchvision.io.encode_png(drawn).numpy().tobytes()
