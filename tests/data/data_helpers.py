"""Helpers for the data tests (``from data_helpers import ...``): hand-made image and annotation files,
the shapes config, and the NEON sample files."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO

NEON = REPO / "../shared/data/neon_trees"
NEON_XML = NEON / "2019_YELL_2_528000_4978000_image_crop2.xml"
# The DeepForest sample files live beside the repository in the team's workspace (CI has them); a clone
# elsewhere skips the tests on them.  Tests here have no network to download them.
needs_neon = pytest.mark.skipif(not NEON_XML.is_file(), reason=f"NEON sample files not at {NEON.resolve()} "
                                "(the workspace's shared/data; a clone outside the workspace has no copy)")


def write_png(path: Path, height: int, width: int, mode: str = "RGB", value: int = 128) -> Path:
    """A small image file via PIL (modes L, RGB, RGBA, I;16)."""
    from PIL import Image

    channels = {"L": (), "RGB": (3,), "RGBA": (4,), "I;16": ()}[mode]
    dtype = np.uint16 if mode == "I;16" else np.uint8
    array = np.full((height, width, *channels), value, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def coco_json(path: Path, images: list[dict], annotations: list[dict], categories: list[dict] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    categories = categories if categories is not None else [{"id": 1, "name": "thing"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}, indent=1))
    return path


def shapes_config(shapes_dir: Path, *overrides: str):
    """The shapes dataset config pointed at ``shapes_dir``."""
    from raydet.config import load_config

    return load_config(REPO / "configs/_base_/datasets/shapes.yaml", [f"data.data_root={shapes_dir}", *overrides])


def jpeg_with_orientation(path: Path, height: int, width: int, orientation: int) -> Path:
    """A JPEG whose EXIF orientation tag says how to rotate it for display."""
    from PIL import Image

    array = np.zeros((height, width, 3), np.uint8)
    array[: height // 2] = 255  # top half white: shows where "up" went
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", exif=exif.tobytes())
    path.write_bytes(buffer.getvalue())
    return path


def mask_sample(height: int = 60, width: int = 100, image_id: int = 1):
    """A ``Sample`` with three instances whose boxes are their masks' tight boxes: a rectangle, an ellipse and
    an ignored triangle; the image is 255 on the instances' pixels and 0 elsewhere (pixels and masks must
    move together)."""
    import torch

    from raydet.data.sample import Sample

    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    rectangle = (xs > 4) & (xs < 20) & (ys > 6) & (ys < 30)
    ellipse = ((xs - 0.6 * width) / (0.15 * width)) ** 2 + ((ys - 0.5 * height) / (0.3 * height)) ** 2 <= 1
    triangle = (ys > 0.75 * height) & (ys < height - 1) & (np.abs(xs - 0.25 * width) < (ys - 0.75 * height))
    masks = torch.from_numpy(np.stack([rectangle, ellipse, triangle]).astype(np.uint8))
    img = (masks.amax(dim=0) * 255).expand(3, height, width).contiguous()
    return Sample(img=img, boxes=tight_boxes(masks), labels=torch.arange(3), ignore=torch.tensor([False, False, True]),
                  image_id=image_id, ori_shape=(height, width), img_shape=(height, width),
                  pad_shape=(height, width), masks=masks)


def tight_boxes(masks):
    """``[N, 4]`` float32 x1, y1, x2, y2 (x2, y2 exclusive) of ``[N, H, W]`` non-empty masks."""
    import torch
    from torchvision.ops import masks_to_boxes

    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
