"""Mask R-CNN through the whole pipeline on Ray: masks streamed to DDP workers, segm metrics in the run's
metrics, MLflow and ``raydet.test``, RLE masks in ``--out`` and in ``raydet.infer``'s predictions."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from raydet import evaluate as test_cli
from raydet import infer
from raydet.builder import build_dataset, build_model
from raydet.config import load_config
from raydet.engine.launcher import launch
from raydet.evaluation.coco_metric import METRIC_NAMES, SEGM_METRIC_NAMES
from tests.demo_helpers import printed_metrics, quick_overrides
from tests.helpers import REPO

MASK_DEMO = REPO / "configs/demo/mask_rcnn_tiny_shapes.yaml"


def pycocotools_segm(ann_file: str, results_file: Path) -> dict[str, float]:
    """pycocotools' own segm evaluation of a results file (bboxes dropped: sizes from the masks)."""
    gt = COCO(ann_file)
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in json.loads(results_file.read_text())]
    evaluator = COCOeval(gt, gt.loadRes(results), "segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {name: round(float(value), 4) for name, value in zip(SEGM_METRIC_NAMES, evaluator.stats)}


def rigged_mask_rcnn(config) -> torch.nn.Module:
    """The config's Mask R-CNN with every RoI a confident "rectangle" filled by its mask: masks on every image
    (an untrained model finds nothing)."""
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.bias[0] = 8.0
        model.roi_head.mask_head.conv_logits.bias.fill_(8.0)
    return model


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_mask_rcnn_trains_on_streamed_masks_and_its_masks_are_scored_and_written(ray_session, small_shapes,
                                                                                tmp_path, capsys):
    overrides = quick_overrides(small_shapes)
    config = load_config(MASK_DEMO, overrides)
    outcome = launch(config, tmp_path / "run")
    final = outcome.final_metrics
    # two DDP workers trained on masks streamed by Ray Data (loss_mask among the logged losses), evaluated on both
    assert set(METRIC_NAMES) | set(SEGM_METRIC_NAMES) <= set(final)
    assert json.loads((outcome.work_dir / "final_metrics.json").read_text())["segm_mAP"] == final["segm_mAP"]
    assert (outcome.work_dir / "predictions.png").stat().st_size > 0
    logged = mlflow.MlflowClient(outcome.mlflow_uri).get_run(outcome.mlflow_run_id).data.metrics
    assert {"train/loss_mask", "val/segm_mAP", "val/segm_mAP_50"} <= set(logged), sorted(logged)

    # raydet.test on a checkpoint whose every RoI is a confident "rectangle" filled by its mask: masks on every
    # image, so the comparison with pycocotools below is over real detections (an untrained model finds nothing)
    torch.save({"model": rigged_mask_rcnn(config).state_dict()}, tmp_path / "checkpoint.pt")
    capsys.readouterr()
    assert test_cli.main([str(MASK_DEMO), str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "results.json"),
                          "--set", *overrides]) == 0
    printed = printed_metrics(capsys.readouterr().out)
    results = json.loads((tmp_path / "results.json").read_text())
    dataset = build_dataset(config, "test")
    assert results and all(set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"} for r in results)
    assert {r["image_id"] for r in results} == {int(record["image_id"]) for record in dataset.records}
    heights = {int(record["image_id"]): (record["height"], record["width"]) for record in dataset.records}
    for result in results:  # each mask at its original image's size, filling its box (the box's own pixels)
        mask = mask_utils.decode(result["segmentation"])
        assert mask.shape == heights[result["image_id"]]
        x, y, w, h = result["bbox"]
        rows, cols = np.nonzero(mask)
        assert len(rows) and abs(cols.min() - x) <= 2 and abs(cols.max() + 1 - (x + w)) <= 2, result["bbox"]
        assert abs(rows.min() - y) <= 2 and abs(rows.max() + 1 - (y + h)) <= 2, result["bbox"]
    expected = pycocotools_segm(dataset.ann_file, tmp_path / "results.json")
    assert {name: printed[name] for name in SEGM_METRIC_NAMES} == pytest.approx(expected, abs=1e-4)
    assert expected["segm_mAP_50"] > 0  # else the comparison means nothing

    # raydet.infer: every detection with its mask as RLE, pictures drawn
    images = sorted(Path(dataset.records[0]["path"]).parent.glob("val_*.png"))[:3]
    assert infer.main([str(MASK_DEMO), str(tmp_path / "checkpoint.pt"), *map(str, images),
                       "--out", str(tmp_path / "infer"), "--set", *overrides]) == 0
    found = json.loads((tmp_path / "infer" / "predictions.json").read_text())
    assert found and all(mask_utils.decode(r["segmentation"]).shape == tuple(r["segmentation"]["size"])
                         for r in found)
    assert len(list((tmp_path / "infer" / "pictures").iterdir())) == len(images)
