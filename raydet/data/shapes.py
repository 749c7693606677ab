"""``shapes``: a synthetic detection dataset generated from a seed, written as PNG + COCO json.

Images of varied size (128–320 px a side) on a striped colour gradient, each
with 0–6 solid shapes — rectangles, ellipses, triangles — of random colour,
scale (12 px up to most of the image) and aspect ratio (1:2 to 2:1), not
overlapping.  Each object's instance mask is the pixels painted for it (COCO
RLE ``segmentation``, its ``area`` the mask's).  A box is the tight extent of its
rectangle or ellipse; a triangle's apex row can be thinner than a pixel and so
miss every pixel centre, leaving its mask up to 2 px inside the box there.
About one image in twelve has no shape at all.  A few hundred images take a
few seconds.

Layout::

    OUT/images/train_000000.png …  OUT/images/val_000000.png …
    OUT/annotations/train.json  OUT/annotations/val.json   (category ids 1..3)
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision.io

from .coco_writer import records_to_coco, write_json
from .masks import encode_masks
from .records import Record, make_record

CLASSES = ("rectangle", "ellipse", "triangle")
MIN_SIDE, MAX_SIDE = 128, 320
MIN_OBJECT = 12
EMPTY_FRACTION = 1 / 12


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``[H, W, 3]`` float: a colour gradient with faint stripes (smooth, so the PNGs stay small)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 215, size=3)
    slope = rng.uniform(-0.25, 0.25, size=(2, 3))
    image = base + ys[..., None] * slope[0] + xs[..., None] * slope[1]
    period, angle = rng.uniform(12, 40), rng.uniform(0, np.pi)
    stripes = 10 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period)
    return image + stripes[..., None]


def _shape_mask(kind: str, box: tuple[int, int, int, int], rng: np.random.Generator) -> np.ndarray:
    """``[h, w]`` bool mask of a shape that exactly fills ``box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    h, w = y2 - y1, x2 - x1
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    if kind == "rectangle":
        return np.ones((h, w), bool)
    if kind == "ellipse":
        return ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2 <= 1.0
    apex = rng.uniform(0, w)  # triangle: base along one horizontal side, apex on the other
    if rng.random() < 0.5:
        ys = h - ys
    left = xs >= apex * (1 - ys / h)
    right = xs <= apex + (w - apex) * (ys / h)
    return left & right


def _place_objects(rng: np.random.Generator, height: int, width: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """Non-overlapping ``(label, box)`` pairs inside the image."""
    count = 0 if rng.random() < EMPTY_FRACTION else int(rng.integers(1, 7))
    placed: list[tuple[int, tuple[int, int, int, int]]] = []
    for _ in range(count * 20):
        if len(placed) == count:
            break
        size = np.exp(rng.uniform(np.log(MIN_OBJECT), np.log(0.6 * min(height, width))))
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        w = int(np.clip(size * np.sqrt(aspect), MIN_OBJECT, width - 2))
        h = int(np.clip(size / np.sqrt(aspect), MIN_OBJECT, height - 2))
        x1, y1 = int(rng.integers(1, width - w)), int(rng.integers(1, height - h))
        box = (x1, y1, x1 + w, y1 + h)
        if all(box[2] + 2 <= b[0] or b[2] + 2 <= box[0] or box[3] + 2 <= b[1] or b[3] + 2 <= box[1] for _, b in placed):
            placed.append((int(rng.integers(len(CLASSES))), box))
    return placed


def draw_image(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, tuple[int, int, int, int]]], np.ndarray]:
    """One random image ``[H, W, 3]`` uint8, its ``(label, (x1, y1, x2, y2))`` objects and their
    ``[N, H, W]`` uint8 instance masks (the pixels painted for each)."""
    height, width = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    image = _background(rng, height, width)
    objects = _place_objects(rng, height, width)
    masks = np.zeros((len(objects), height, width), np.uint8)
    for index, (label, (x1, y1, x2, y2)) in enumerate(objects):
        local = image[y1:y2, x1:x2].mean(axis=(0, 1))
        colour = rng.uniform(0, 255, size=3)
        while np.abs(colour - local).sum() < 150:  # keep shapes visible against their surroundings
            colour = rng.uniform(0, 255, size=3)
        mask = _shape_mask(CLASSES[label], (x1, y1, x2, y2), rng)
        image[y1:y2, x1:x2][mask] = colour
        masks[index, y1:y2, x1:x2] = mask
    return np.clip(image, 0, 255).astype(np.uint8), objects, masks


def generate_shapes(out_dir: str | os.PathLike, seed: int = 0, num_train: int = 240,
                    num_val: int = 60) -> dict[str, Path]:
    """Write the shapes dataset to ``out_dir``; the same seed always gives the same files.

    Returns:
        ``{"train": train.json path, "val": val.json path}``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written, pngs = {}, []
    with ThreadPoolExecutor(max_workers=4) as png_writers:  # PNG encoding releases the GIL
        for split, count in (("train", num_train), ("val", num_val)):
            records: list[Record] = []
            for index in range(count):
                image, objects, masks = draw_image(rng)
                path = out / "images" / f"{split}_{index:06d}.png"
                chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
                pngs.append(png_writers.submit(torchvision.io.write_png, chw, str(path), compression_level=1))
                records.append(make_record(index + 1, str(path), image.shape[0], image.shape[1],
                                           boxes=[box for _, box in objects], labels=[label for label, _ in objects],
                                           masks=encode_masks(masks)))
            written[split] = out / "annotations" / f"{split}.json"
            write_json(records_to_coco(records, CLASSES, [1, 2, 3], img_prefix=str(out / "images")), written[split])
    for png in pngs:
        png.result()  # re-raise any write error
    (out / "README.md").write_text(
        f"# shapes\n\nSynthetic detection data made by `python -m raydet.data.prepare shapes` "
        f"(seed {seed}, {num_train} train / {num_val} val images, classes {', '.join(CLASSES)}).\n"
    )
    return written
