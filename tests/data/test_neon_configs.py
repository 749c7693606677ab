"""The NEON tree-crown configs: they check against the prepared data, and their pipelines keep a crown's
size in pixels whatever the tile's size (the test pipeline doubles any tile; training jitters around it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raydet.builder import build_dataset, build_pipeline
from raydet.config import load_config
from raydet.data.decode import prepare_sample
from raydet.data.neon_trees import prepare_neon_trees
from raydet.data.sample import Sample
from tests.data.data_helpers import NEON, needs_neon
from tests.helpers import REPO, run_cli

pytestmark = [needs_neon, pytest.mark.timeout(120)]
NEON_CONFIGS = sorted(path.name for path in (REPO / "configs/neon_trees").glob("*.yaml"))


@pytest.fixture(scope="module")
def neon_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("neon_trees")
    prepare_neon_trees(out, source=NEON)
    return out


def test_there_are_two_detectors_and_the_recommended_one_comes_first():
    types = [load_config(REPO / "configs/neon_trees" / name)["model"]["type"] for name in NEON_CONFIGS]
    assert len(set(types)) == len(types) >= 2 and types[0] == "FasterRCNN"  # the README's Results say why


@pytest.mark.parametrize("name", NEON_CONFIGS)
def test_neon_config_checks_against_the_prepared_data(name, neon_dir):
    checked = run_cli("raydet.check", f"configs/neon_trees/{name}", "--set", f"data.data_root={neon_dir}")
    assert checked.returncode == 0, checked.stderr
    assert "data.train: CocoDataset 48 images" in checked.stdout and "config OK" in checked.stdout


@pytest.mark.parametrize("name", NEON_CONFIGS)
def test_neon_pipelines_double_any_tile_and_keep_boxes_on_their_crowns(name, neon_dir):
    config = load_config(REPO / "configs/neon_trees" / name, [f"data.data_root={neon_dir}",
                                                              "data.test.ann_file=annotations/soap_061.json"])
    soap = build_dataset(config, "test")
    sample = prepare_sample(soap.records[0], soap.pipeline, np.random.default_rng(0))
    assert sample.img_shape == (800, 800) and sample.scale_factor == pytest.approx((2.0,) * 4)
    test_pipeline = build_pipeline(config, "test")
    for height, width in ((300, 1000), (1200, 640)):  # tiles of other sizes: the same 2x, not a fixed size
        tile = Sample(img=torch.zeros(3, height, width, dtype=torch.uint8), boxes=torch.zeros(0, 4),
                      labels=torch.zeros(0, dtype=torch.int64), ignore=torch.zeros(0, dtype=torch.bool), image_id=1,
                      ori_shape=(height, width), img_shape=(height, width), pad_shape=(height, width))
        assert test_pipeline(tile, np.random.default_rng(0)).img_shape == (2 * height, 2 * width)
    train = build_dataset(config, "train")
    rng = np.random.default_rng(0)
    sizes = set()
    for index in range(len(train)):
        sample = prepare_sample(train.records[index], train.pipeline, rng)
        height, width = sample.img_shape
        sizes.add(height)
        assert 600 <= height <= 1000 and height == width  # square tiles stay square under quarter turns
        boxes = sample.boxes.numpy()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        # the boxes sit on the crowns: the same count as the record's, each as large as the jitter makes it
        record = train.records[index]
        assert len(boxes) == len(record["boxes"])
        scale = height / record["height"]
        areas = np.sort((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        original = record["boxes"]
        expected = np.sort((original[:, 2] - original[:, 0]) * (original[:, 3] - original[:, 1]))
        np.testing.assert_allclose(areas, expected * scale ** 2, rtol=0.02, atol=4)
    assert len(sizes) > 10  # scale jitter


def test_the_neon_sweep_checks_every_trial_against_the_prepared_data(neon_dir):
    checked = run_cli("raydet.tune", "configs/tune/neon_trees_lr.yaml", "--check",
                      "--set", f"data.data_root={neon_dir}")
    assert checked.returncode == 0, checked.stderr
    assert "4 trial config(s) built: optimizer.lr (grid)" in checked.stdout and "sweep OK" in checked.stdout
