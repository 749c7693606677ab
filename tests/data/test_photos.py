"""The photo set (``python -m raydet.data.prepare photos``): COCO-sized JPEG crops of the NEON orthophoto in
COCO's layout, read by the COCO configs as they are."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raydet.builder import build_dataset
from raydet.config import load_config
from raydet.data.decode import prepare_sample
from raydet.data.image_io import load_rgb
from raydet.data.photos import CROP_SIZES, prepare_photos
from tests.data.data_helpers import NEON, REPO, needs_neon
from tests.helpers import run_cli

FASTER_RCNN_COCO = REPO / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml"


@needs_neon
@pytest.mark.timeout(120)
def test_photos_are_coco_sized_jpegs_split_by_region_and_the_coco_config_trains_on_them(tmp_path):
    written = prepare_photos(tmp_path / "photos", source=NEON, num_train=12, num_val=4, seed=3)
    again = prepare_photos(tmp_path / "again", source=NEON, num_train=12, num_val=4, seed=3)
    windows = {}
    for split, path in written.items():
        coco = json.loads(path.read_text())
        assert path.read_text() == again[split].read_text().replace(str(tmp_path / "again"), str(tmp_path / "photos"))
        windows[split] = [image["source_window"] for image in coco["images"]]
        for image in coco["images"]:
            assert (image["width"], image["height"]) in CROP_SIZES
            folder = path.parent.parent / ("train2017" if split == "train" else "val2017")
            jpeg = (folder / image["file_name"]).read_bytes()
            twin = tmp_path / "again" / folder.name / image["file_name"]
            assert jpeg[:3] == b"\xff\xd8\xff" and jpeg == twin.read_bytes()  # JPEGs, the same for the same seed
            assert tuple(load_rgb(str(folder / image["file_name"])).shape) == (3, image["height"], image["width"])
        for box in (a["bbox"] for a in coco["annotations"]):
            assert min(box) >= 0 and box[2] >= 2 and box[3] >= 2
        assert {a["category_id"] for a in coco["annotations"]} == {1}
    assert max(top + height for top, _, height, _ in windows["train"]) <= min(top for top, *_ in windows["val"])

    config = load_config(FASTER_RCNN_COCO, [f"data.data_root={tmp_path / 'photos'}"])
    train = build_dataset(config, "train")
    assert len(train) == 12 and train.classes == ["Tree"] and sum(len(r["boxes"]) for r in train.records) > 100
    landscape = next(r for r in train.records if (r["width"], r["height"]) == (640, 480))
    sample = prepare_sample(landscape, train.pipeline, np.random.default_rng(0))
    assert sample.img_shape == (800, 1067) and sample.pad_shape == (800, 1088)  # mmdetection's 1333 x 800


@needs_neon
@pytest.mark.timeout(120)
def test_prepare_photos_cli(tmp_path):
    out = run_cli("raydet.data.prepare", "photos", "--out", str(tmp_path), "--source", str(NEON),
                  "--num-train", "3", "--num-val", "2")
    assert out.returncode == 0, out.stderr
    assert "train: 3 images" in out.stdout and "val: 2 images" in out.stdout
    assert "DeepForest" in (tmp_path / "README.md").read_text() and (tmp_path / "LICENSE.deepforest").is_file()
