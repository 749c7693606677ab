"""Helpers for the data tests (``from data_helpers import ...``): hand-made image and annotation files,
the shapes config, and the NEON sample files."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

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
