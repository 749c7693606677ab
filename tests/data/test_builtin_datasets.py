"""Built-in datasets: the synthetic shapes generator and the NEON tree-crown preparation."""
from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest

from raydet.data import CocoDataset
from raydet.data.decode import prepare_sample
from raydet.data.neon_trees import WHEEL_SHA256, extract_sources, prepare_neon_trees, tile_starts
from raydet.data.problems import DataError
from raydet.data.shapes import CLASSES, MAX_SIDE, MIN_SIDE, generate_shapes
from tests.data.data_helpers import NEON, needs_neon
from tests.helpers import run_cli


@pytest.mark.timeout(60)
def test_shapes_are_varied_valid_and_reproducible(shapes_dir, tmp_path):
    train = CocoDataset(str(shapes_dir / "annotations/train.json"), str(shapes_dir / "images"), on_bad_record="error")
    assert train.classes == list(CLASSES) and len(train) == 16 and not train.problems
    sizes = {(r["height"], r["width"]) for r in train.records}
    assert len(sizes) > 10 and all(MIN_SIDE <= s <= MAX_SIDE for hw in sizes for s in hw)
    boxes = np.concatenate([r["boxes"] for r in train.records])
    labels = np.concatenate([r["labels"] for r in train.records])
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    assert sides.min() >= 12 and sides.max() > 80 and set(labels.tolist()) == {0, 1, 2}
    aspect = sides[:, 0] / sides[:, 1]
    assert aspect.min() < 0.75 and aspect.max() > 1.33
    for record in train.records:  # the images are the sizes the annotations say
        sample = prepare_sample(record, train.pipeline, np.random.default_rng(0))
        assert tuple(sample.img.shape) == (3, record["height"], record["width"]), record["path"]
    again = generate_shapes(tmp_path, seed=0, num_train=16, num_val=6)
    assert json.loads(again["train"].read_text())["annotations"] == \
        json.loads((shapes_dir / "annotations/train.json").read_text())["annotations"]
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "images/train_000003.png") == digest(shapes_dir / "images/train_000003.png")


@pytest.mark.timeout(60)
def test_shapes_include_images_without_objects(tmp_path):
    generate_shapes(tmp_path, seed=1, num_train=60, num_val=1)
    data = json.loads((tmp_path / "annotations/train.json").read_text())
    with_objects = {a["image_id"] for a in data["annotations"]}
    assert 0 < len(data["images"]) - len(with_objects) < 20


@pytest.mark.timeout(90)
def test_prepare_cli_writes_shapes(tmp_path):
    result = run_cli("raydet.data.prepare", "shapes", "--out", str(tmp_path),
                     "--num-train", "5", "--num-val", "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "train: 5 images" in result.stdout and (tmp_path / "annotations/val.json").is_file()


@pytest.mark.timeout(10)
def test_tile_starts_cover_the_length_with_the_last_tile_flush():
    assert tile_starts(1000, 400, 300) == [0, 300, 600]
    assert tile_starts(1001, 400, 300) == [0, 300, 600, 601]
    assert tile_starts(300, 400, 300) == [0]


@needs_neon
@pytest.mark.timeout(120)
def test_neon_trees_tiles_split_by_region_with_clipped_boxes_and_licence(tmp_path):
    written = prepare_neon_trees(tmp_path, source=NEON)
    train = CocoDataset(str(written["train"]), str(tmp_path / "images"), on_bad_record="error")
    val = CocoDataset(str(written["val"]), str(tmp_path / "images"), on_bad_record="error")
    soap = CocoDataset(str(written["soap_061"]), str(tmp_path / "images"), on_bad_record="error")
    assert train.classes == val.classes == soap.classes == ["Tree"]  # SOAP's Alive and Dead crowns are trees
    assert len(soap.records[0]["boxes"]) == 37 and not soap.records[0]["labels"].any()

    def rows(dataset):  # the image rows each tile covers, from its name ..._y{top}_x{left}.png
        tops = [int(r["path"].rsplit("_y", 1)[1][:4]) for r in dataset.records]
        return min(tops), max(tops) + 400

    assert rows(train)[1] <= rows(val)[0]  # no pixel row in both splits
    for record in train.records + val.records:
        assert (record["height"], record["width"]) == (400, 400)
        assert (record["boxes"] >= 0).all() and (record["boxes"] <= 400).all()
    kept = sum(int((~r["ignore"]).sum()) for r in train.records + val.records)
    assert kept > 574  # overlapping tiles see some crowns twice
    assert "MIT" in (tmp_path / "LICENSE.deepforest").read_text()
    assert "DeepForest" in (tmp_path / "README.md").read_text()


@pytest.mark.timeout(30)
def test_wheel_with_the_wrong_sha256_is_refused(tmp_path):
    wheel = tmp_path / "deepforest-2.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("deepforest/data/SOAP_061.png", b"not the real file")
    with pytest.raises(DataError, match=f"does not match the expected {WHEEL_SHA256}"):
        extract_sources(wheel, tmp_path)
