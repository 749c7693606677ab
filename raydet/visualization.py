"""Draw detections on images (torchvision.utils), for MLflow pictures and ``raydet.infer``."""
from __future__ import annotations

import torch
import torchvision
from PIL import ImageDraw, ImageFont
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, make_grid

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                    class_names: list[str], score_threshold: float = 0.3) -> torch.Tensor:
    """``image`` uint8 ``[3,H,W]`` with ``boxes [K,4]`` (x1y1x2y2, its pixels) drawn where
    ``scores >= score_threshold``: one colour per class, lines and captions ("class score", white on the
    class's colour) sized to the image.  Captions go above their box (inside it at the top edge), highest
    score first; a caption that would cover one already placed is left out (its box stays)."""
    keep = scores >= score_threshold
    order = torch.argsort(scores[keep], descending=True)
    boxes, labels, scores = boxes[keep][order].float(), labels[keep][order], scores[keep][order]
    colors = [PALETTE[int(label) % len(PALETTE)] for label in labels]
    height, width = image.shape[-2:]
    side = max(height, width)
    drawn = draw_bounding_boxes(image, boxes, colors=colors, width=max(1, round(side / 300)))
    picture = to_pil_image(drawn)
    pen = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(11, round(side / 50)))
    placed: list[tuple[int, int, int, int]] = []
    for box, label, score, color in zip(boxes.tolist(), labels.tolist(), scores.tolist(), colors):
        name = class_names[label] if label < len(class_names) else str(label)
        text = f"{name} {score:.2f}"
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


def grid_png(images: list[torch.Tensor], size: int = 320) -> bytes:
    """uint8 ``[3,H_i,W_i]`` images as the bytes of one PNG grid, each letterboxed into ``size x size``."""
    tiles = []
    for image in images:
        scale = size / max(image.shape[1:])
        resized = torchvision.transforms.v2.functional.resize(
            image, [max(1, round(image.shape[1] * scale)), max(1, round(image.shape[2] * scale))], antialias=True)
        tile = torch.full((3, size, size), 255, dtype=torch.uint8)
        tile[:, : resized.shape[1], : resized.shape[2]] = resized
        tiles.append(tile)
    grid = make_grid(torch.stack(tiles), nrow=min(4, len(tiles)), padding=4, pad_value=255)
    return torchvision.io.encode_png(grid).numpy().tobytes()
