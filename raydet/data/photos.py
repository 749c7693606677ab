"""``photos``: a COCO-like set of JPEG photographs cut from the NEON orthophoto, for measuring the data pipeline.

The built-in shapes are small PNGs; COCO's work is 640 x 480 JPEGs decoded and
resized to 1333 x 800.  This set is made of real imagery, sized and encoded as
COCO's: crops of the YELL orthophoto (``raydet.data.neon_trees``' source; 2299
x 2472 px, 574 crowns), most 640 x 480, some portrait (480 x 640) and some of
COCO's other common sizes, written as JPEG (quality 90, 4:2:0 like COCO's),
with the crowns inside each crop as COCO annotations (class ``Tree``).  The
top ``1 - val_fraction`` of the orthophoto's rows give the training crops, the
rest the validation crops: no pixel is in both splits.

Layout (COCO's, so the ``coco_detection.yaml`` configs read it with only
``data.data_root`` changed)::

    OUT/train2017/*.jpg  OUT/val2017/*.jpg
    OUT/annotations/instances_train2017.json  OUT/annotations/instances_val2017.json
    OUT/README.md  (what it is, where it came from, the licence)
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torchvision.io

from .coco_writer import records_to_coco, write_json
from .neon_trees import ATTRIBUTION, YELL, crop_boxes, find_sources, read_yell
from .problems import DataError
from .records import make_record

#: ``(width, height)`` of a crop and how often it is drawn: mostly COCO's 640 x 480, some portrait, some of
#: COCO's other frequent sizes.
CROP_SIZES = ((640, 480), (480, 640), (640, 427), (427, 640), (500, 375), (612, 612), (333, 500))
CROP_WEIGHTS = (0.70, 0.10, 0.05, 0.05, 0.04, 0.03, 0.03)
SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}
JPEG_QUALITY = 90


def prepare_photos(out_dir: str | Path, source: str | Path | None = None, num_train: int = 240, num_val: int = 60,
                   seed: int = 0, val_fraction: float = 0.3, min_visible: float = 0.5) -> dict[str, Path]:
    """Write ``num_train`` and ``num_val`` JPEG crops of the YELL orthophoto with COCO annotations to ``out_dir``.

    Returns:
        ``{"train": ..., "val": ...}`` annotation json paths.
    """
    out = Path(out_dir)
    sources = find_sources(source, out / "sources")
    yell, image, regions = read_yell(sources, val_fraction)
    height, width = int(image.shape[-2]), int(image.shape[-1])
    split_row = regions["val"][0]
    tallest = max(h for _, h in CROP_SIZES)
    for split, (region_top, region_bottom) in regions.items():
        if region_bottom - region_top < tallest:
            raise DataError(f"the {split} region of {YELL}.png is {region_bottom - region_top} px high, less than "
                            f"a {tallest} px crop: choose val_fraction between "
                            f"{tallest / height:.2f} and {1 - tallest / height:.2f}")
    rng = np.random.default_rng(seed)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count in (("train", num_train), ("val", num_val)):
        folder = out / SPLIT_FOLDERS[split]
        folder.mkdir(parents=True, exist_ok=True)
        region_top, region_bottom = regions[split]
        records, windows = [], []
        for index in rng.choice(len(CROP_SIZES), size=count, p=CROP_WEIGHTS):
            crop_w, crop_h = CROP_SIZES[index]
            top = int(rng.integers(region_top, region_bottom - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            crop = image[:, top: top + crop_h, left: left + crop_w].contiguous()
            path = folder / f"{len(records) + 1:012d}.jpg"
            torchvision.io.write_jpeg(crop, str(path), quality=JPEG_QUALITY)
            boxes, labels, ignore = crop_boxes(yell, top, left, crop_h, crop_w, min_visible)
            records.append(make_record(len(records) + 1, str(path), crop_h, crop_w, boxes, labels, ignore))
            windows.append([top, left, crop_h, crop_w])
        coco = records_to_coco(records, ["Tree"], [1], img_prefix=str(folder))
        for entry, window in zip(coco["images"], windows):
            entry["source_window"] = window  # top, left, height, width in the orthophoto: where the crop came from
        written[split] = out / "annotations" / f"instances_{SPLIT_FOLDERS[split]}.json"
        write_json(coco, written[split])

    if (sources / "LICENSE.deepforest").is_file():
        shutil.copyfile(sources / "LICENSE.deepforest", out / "LICENSE.deepforest")
    (out / "README.md").write_text(
        f"# photos\n\n{ATTRIBUTION}\nPrepared by `python -m raydet.data.prepare photos`: {num_train} training and "
        f"{num_val} validation crops (seed {seed}; sizes {', '.join(f'{w}x{h}' for w, h in CROP_SIZES)}) of "
        f"{YELL}.png, JPEG quality {JPEG_QUALITY}; rows {split_row}..{height} give the validation crops; "
        f"crowns under {min_visible:.0%} inside a crop are iscrowd.  COCO's layout: the coco_detection.yaml "
        "configs read it with data.data_root set to this folder.\n")
    return written
