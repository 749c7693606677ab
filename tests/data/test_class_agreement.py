"""Every split numbers its labels like the training split, and the model's num_classes matches the data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision.io

from raydet.builder import build_datasets, check_config
from raydet.config import ConfigError, load_config
from raydet.data.problems import DataError
from tests.helpers import REPO, run_cli, write

pytestmark = pytest.mark.timeout(60)

XML = ("<annotation><filename>{name}.png</filename><size><width>32</width><height>32</height><depth>3</depth></size>"
       "{objects}</annotation>")
OBJECT = ("<object><name>{cls}</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax>"
          "<ymax>20</ymax></bndbox></object>")


def voc_split(folder: Path, images: dict[str, list[str]]) -> Path:
    """A folder of VOC xml files (``{image name: [class names]}``) with their 32x32 PNGs beside them."""
    folder.mkdir(parents=True)
    for name, classes in images.items():
        write(folder / f"{name}.xml", XML.format(name=name, objects="".join(OBJECT.format(cls=c) for c in classes)))
        torchvision.io.write_png(torch.zeros(3, 32, 32, dtype=torch.uint8), str(folder / f"{name}.png"))
    return folder


def voc_config(tmp_path: Path, val: dict[str, list[str]], *overrides: str):
    train = voc_split(tmp_path / "train", {"a": ["bus", "car"], "b": ["person", "car"]})
    val_folder = voc_split(tmp_path / "val", val)
    return load_config(write(tmp_path / "voc.yaml", f"""
data:
  train: {{type: VOCDataset, ann_file: {train}, img_prefix: {train}}}
  val: {{type: VOCDataset, ann_file: {val_folder}, img_prefix: {val_folder}}}
"""), overrides)


def test_a_voc_val_split_lacking_classes_numbers_its_labels_like_training(tmp_path):
    datasets = build_datasets(voc_config(tmp_path, {"c": ["person"]}))
    assert datasets["train"].classes == datasets["val"].classes == ["bus", "car", "person"]
    assert datasets["val"].records[0]["labels"].tolist() == [2]  # person, as in training (alone it would be 0)


def test_a_class_only_the_val_split_names_is_reported_and_dropped(tmp_path):
    datasets = build_datasets(voc_config(tmp_path, {"c": ["person", "dog"]}))
    val = datasets["val"]
    assert val.records[0]["labels"].tolist() == [2]
    assert val.problems.counts == {"unknown_category": 1}
    assert "'dog'" in val.problems.examples["unknown_category"][0]


def test_the_test_split_alone_still_gets_the_training_classes(tmp_path):
    config = voc_config(tmp_path, {"c": ["person"]})
    config["data"]["test"] = config["data"].pop("val")
    assert build_datasets(config, ("test",))["test"].classes == ["bus", "car", "person"]


def test_coco_splits_with_other_categories_are_an_error(tmp_path):
    def coco(name: str, categories: list[str]) -> Path:
        return write(tmp_path / f"{name}.json", json.dumps({
            "images": [{"id": 1, "file_name": "x.png", "width": 32, "height": 32}], "annotations": [],
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(categories)]}))

    torchvision.io.write_png(torch.zeros(3, 32, 32, dtype=torch.uint8), str(tmp_path / "x.png"))
    config = load_config(write(tmp_path / "coco.yaml", f"""
data:
  train: {{type: CocoDataset, ann_file: {coco("train", ["cat", "dog"])}, img_prefix: {tmp_path}}}
  val: {{type: CocoDataset, ann_file: {coco("val", ["dog", "cat"])}, img_prefix: {tmp_path}}}
"""))
    with pytest.raises(DataError, match=r"data\.val \(.*val\.json\) has the classes \['dog', 'cat'\] but data\.train "
                                        r"\(.*train\.json\) has \['cat', 'dog'\]"):
        build_datasets(config)


DEMO = REPO / "configs/demo/fcos_tiny_shapes.yaml"


def test_num_classes_must_match_the_training_classes(shapes_dir):
    config = load_config(DEMO, [f"data.data_root={shapes_dir}", "model.bbox_head.num_classes=2"])
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert str(err.value) == ("--set model.bbox_head.num_classes=2: model.bbox_head.num_classes is 2 but data.train "
                              "has 3 classes (rectangle, ellipse, triangle); set it to 3")
    assert any(line.startswith("model: FCOS built") for line in
               check_config(load_config(DEMO, [f"data.data_root={shapes_dir}"])).lines)


def test_the_check_command_stops_on_num_classes(shapes_dir):
    out = run_cli("raydet.check", str(DEMO), "--set", f"data.data_root={shapes_dir}", "model.bbox_head.num_classes=2")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith("data.train has 3 classes (rectangle, ellipse, triangle); set it to 3")
