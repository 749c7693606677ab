"""``python -m raydet.test``: COCO metrics of a checkpoint, plain and with test-time augmentation."""
from __future__ import annotations

import json

import pytest
import torch
from engine_helpers import DEMO_CONFIG, quick_overrides

from raydet.builder import build_model
from raydet.config import load_config
from raydet.evaluation.coco_metric import METRIC_NAMES
from raydet.test import main, tta_configs


def test_tta_views_are_each_scale_unflipped_and_flipped(small_shapes):
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    views = tta_configs(config, "test", [[320, 256], [400, 320]])
    steps = [(v["data"]["test"]["pipeline"][0]["img_scale"], v["data"]["test"]["pipeline"][1]["flip_ratio"]) for v in views]
    assert steps == [([320, 256], 0.0), ([320, 256], 1.0), ([400, 320], 0.0), ([400, 320], 1.0)]
    assert config["data"]["test"]["pipeline"][1]["flip_ratio"] == 0.0  # the original is untouched


@pytest.mark.timeout(300)
def test_metrics_of_a_checkpoint_plain_and_augmented(ray_session, small_shapes, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model(load_config(DEMO_CONFIG, quick_overrides(small_shapes)))
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    overrides = ["--set", *quick_overrides(small_shapes)]
    assert main([str(DEMO_CONFIG), str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "plain.json"), *overrides]) == 0
    assert main([str(DEMO_CONFIG), str(tmp_path), "--aug-test", "--tta-scales", "320x256,256x192",
                 "--out", str(tmp_path / "tta.json"), *overrides]) == 0
    for name in ("plain.json", "tta.json"):
        metrics = json.loads((tmp_path / name).read_text())
        assert set(metrics) == set(METRIC_NAMES) and all(-1.0 <= v <= 1.0 for v in metrics.values())
    assert main([str(DEMO_CONFIG), str(tmp_path / "nope.pt"), *overrides]) == 2
    assert "error: checkpoint not found" in capsys.readouterr().err
