"""Draw detections on images (torchvision.utils), for MLflow pictures and ``raydet.infer``."""
from __future__ import annotations

import torch
import torchvision
from torchvision.utils import draw_bounding_boxes, make_grid

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                    class_names: list[str], score_threshold: float = 0.3) -> torch.Tensor:
    """``image`` uint8 ``[3,H,W]`` with ``boxes [K,4]`` (x1y1x2y2, its pixels) drawn
    where ``scores >= score_threshold``."""
    keep = scores >= score_threshold
    boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    captions = [f"{class_names[int(label)] if int(label) < len(class_names) else int(label)} {float(s):.2f}"
                for label, s in zip(labels, scores)]
    colors = [PALETTE[int(label) % len(PALETTE)] for label in labels]
    return draw_bounding_boxes(image, boxes.float(), labels=captions, colors=colors, width=2)


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
