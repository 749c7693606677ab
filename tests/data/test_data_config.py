"""The data section: paths resolved on the driver, checked keys, pipelines built alone for workers."""
from __future__ import annotations

import pytest

from raydet.builder import build_dataset, build_pipeline, check_config
from raydet.config import ConfigError, load_config
from raydet.data.transforms import Resize
from tests.helpers import write

pytestmark = pytest.mark.timeout(60)


def test_relative_paths_resolve_against_data_root_and_the_starting_directory(shapes_dir, tmp_path, monkeypatch):
    config = load_config(write(tmp_path / "c.yaml", f"""
data:
  data_root: {shapes_dir.name}
  train: {{type: CocoDataset, ann_file: annotations/train.json, img_prefix: images}}
"""))
    monkeypatch.chdir(shapes_dir.parent)
    dataset = build_dataset(config, "train")
    assert dataset.ann_file == str(shapes_dir / "annotations/train.json")
    assert dataset.records[0]["path"].startswith(str(shapes_dir / "images") + "/")


def test_unknown_keys_and_wrong_types_name_the_file_and_key_path(shapes_dir, tmp_path):
    text = f"""
data:
  data_root: {shapes_dir}
  samples_per_gpu: 2
  train: {{type: CocoDataset, ann_file: annotations/train.json, img_prefix: images}}
"""
    path = write(tmp_path / "c.yaml", text)
    wrong = write(tmp_path / "wrong.yaml", text.replace("samples_per_gpu: 2", "samples_per_gpu: two"))
    with pytest.raises(ConfigError, match=rf"{wrong}: data\.samples_per_gpu: expected int"):
        check_config(load_config(wrong))
    with pytest.raises(ConfigError, match=r"data\.train\.on_bad_recrd.*on_bad_record"):
        check_config(load_config(path, ["+data.train.on_bad_recrd=skip"]))
    with pytest.raises(ConfigError, match=r"data\.train\.on_bad_record: expected Literal\['skip', 'error'\]"):
        check_config(load_config(path, ["+data.train.on_bad_record=ignore"]))
    with pytest.raises(ConfigError, match=r"seed: expected an int"):
        check_config(load_config(path, ["+seed=one"]))


def test_pipelines_build_without_reading_annotations(tmp_path):
    config = load_config(write(tmp_path / "c.yaml", """
data:
  train: {type: CocoDataset, ann_file: /nowhere.json, img_prefix: /nowhere,
          pipeline: [{type: Resize, img_scale: [64, 64]}]}
"""))
    (resize,) = build_pipeline(config, "train").transforms
    assert isinstance(resize, Resize) and resize.img_scale == [64, 64]
