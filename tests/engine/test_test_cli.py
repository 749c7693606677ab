"""``python -m raydet.test``: COCO metrics of a checkpoint, plain and with test-time augmentation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import DEMO_CONFIG, quick_overrides

from raydet.builder import build_dataset, build_model, build_pipeline, data_section
from raydet.config import Config, load_config
from raydet.data.coco_writer import detections_to_coco
from raydet.data.collate import collate
from raydet.data.sample import load_sample
from raydet.data.sampling import plan_eval
from raydet.engine.evaluation import predict
from raydet.evaluation.coco_metric import METRIC_NAMES, coco_bbox_metrics, coco_from_dict
from raydet.test import main, tta_configs


def test_tta_views_are_each_scale_unflipped_and_flipped(small_shapes):
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    views = tta_configs(config, "test", [[320, 256], [400, 320]])
    steps = [(v["data"]["test"]["pipeline"][0]["img_scale"], v["data"]["test"]["pipeline"][1]["flip_ratio"])
             for v in views]
    assert steps == [([320, 256], 0.0), ([320, 256], 1.0), ([400, 320], 0.0), ([400, 320], 1.0)]
    assert config["data"]["test"]["pipeline"][1]["flip_ratio"] == 0.0  # the original is untouched


def metrics_in_this_process(model: torch.nn.Module, views: list[Config]) -> dict[str, float]:
    """The test split scored without Ray and without ``raydet.test``: images decoded here, batched as the
    evaluation plan batches them (padding, and the head's GroupNorm over it, then match), one view per config."""
    dataset = build_dataset(views[0], "test")
    section = data_section(views[0])
    pipelines = [build_pipeline(view, "test") for view in views]
    heights, widths = (np.array([r[key] for r in dataset.records]) for key in ("height", "width"))
    batches = []
    for row in plan_eval(heights, widths, section.eval_samples_per_gpu, 1)[0]:
        records = [dataset.records[i] for i in row if i >= 0]
        per_view = [collate([pipeline(load_sample(r), np.random.default_rng(0)) for r in records],
                            section.size_divisor, with_gt=False) for pipeline in pipelines]
        batches.append(per_view[0] if len(views) == 1 else
                       {"img": [b["img"] for b in per_view], "img_metas": [b["img_metas"] for b in per_view]})
    predictions = predict(model, batches, torch.device("cpu"))
    results = detections_to_coco([i for i, _ in predictions], [d for _, d in predictions], dataset.cat_ids)
    ground_truth = coco_from_dict(json.loads(Path(dataset.ann_file).read_text()))
    return coco_bbox_metrics(ground_truth, results, [int(r["image_id"]) for r in dataset.records])[0]


@pytest.mark.timeout(300)
def test_metrics_of_a_checkpoint_plain_and_augmented(ray_session, small_shapes, tmp_path, capsys):
    config = load_config(DEMO_CONFIG, quick_overrides(small_shapes))
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():  # untrained, FCOS finds nothing (all APs 0): every point now predicts a box 4 strides wide
        model.bbox_head.conv_cls.bias.fill_(0.0)
        model.bbox_head.conv_reg.bias.fill_(2.0)
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    expected_plain = metrics_in_this_process(model, [config])
    expected_tta = metrics_in_this_process(model, tta_configs(config, "test", [[320, 256], [256, 192]]))
    assert expected_plain["bbox_mAP_50"] > 0 and expected_tta["bbox_mAP_50"] > 0  # else the comparison means nothing
    overrides = ["--set", *quick_overrides(small_shapes)]
    assert main([str(DEMO_CONFIG), str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "plain.json"),
                 *overrides]) == 0
    assert main([str(DEMO_CONFIG), str(tmp_path), "--aug-test", "--tta-scales", "320x256,256x192",
                 "--out", str(tmp_path / "tta.json"), *overrides]) == 0
    for name, expected in (("plain.json", expected_plain), ("tta.json", expected_tta)):
        metrics = json.loads((tmp_path / name).read_text())
        assert set(metrics) == set(METRIC_NAMES)
        assert metrics == pytest.approx(expected, abs=1e-4), name  # the checkpoint's detections, every image once
    assert main([str(DEMO_CONFIG), str(tmp_path / "nope.pt"), *overrides]) == 2
    assert "error: checkpoint not found" in capsys.readouterr().err
