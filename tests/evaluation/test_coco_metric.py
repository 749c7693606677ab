"""COCO bbox metrics through pycocotools, with mmdetection's names."""
from __future__ import annotations

import pytest

from raydet.evaluation.coco_metric import METRIC_NAMES, coco_from_dict, coco_metrics


@pytest.fixture
def gt():
    images = [{"id": i, "width": 200, "height": 200, "file_name": f"{i}.png"} for i in (1, 2)]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 100, 50], "area": 5000, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [120, 120, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [50, 60, 100, 100], "area": 10000, "iscrowd": 0},
    ]
    return coco_from_dict({"images": images, "annotations": annotations,
                           "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}]})


def detection(image_id, category_id, bbox, score=0.9):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_perfect_detections_score_one(gt):
    results = [detection(1, 7, [10, 10, 100, 50]), detection(1, 9, [120, 120, 40, 40]),
               detection(2, 7, [50, 60, 100, 100])]
    metrics, summary = coco_metrics(gt, results, [1, 2], "bbox")
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics["bbox_mAP"] == metrics["bbox_mAP_50"] == metrics["bbox_mAP_75"] == 1.0
    assert metrics["bbox_mAP_s"] == -1.0  # no small objects in the ground truth
    assert metrics["bbox_mAP_m"] == metrics["bbox_mAP_l"] == 1.0
    # pycocotools' 12 summary lines, the first six the metrics in METRIC_NAMES' order
    lines = summary.splitlines()
    assert len(lines) == 12 and all(line.startswith((" Average Precision", " Average Recall")) for line in lines)
    assert [float(line.rsplit("= ", 1)[1]) for line in lines[:6]] == [metrics[name] for name in METRIC_NAMES]


def test_the_given_results_are_left_as_they_were(gt):
    # pycocotools' loadRes adds area, id, iscrowd and segmentation to each dict it is given;
    # raydet.test writes the same list to --out after scoring it
    results = [detection(1, 7, [10, 10, 100, 50]), detection(2, 7, [50, 60, 100, 100])]
    coco_metrics(gt, results, [1, 2], "bbox")
    assert [set(result) for result in results] == [{"image_id", "category_id", "bbox", "score"}] * 2


def test_a_missed_image_lowers_recall(gt):
    results = [detection(1, 7, [10, 10, 100, 50]), detection(1, 9, [120, 120, 40, 40])]
    metrics, _ = coco_metrics(gt, results, [1, 2], "bbox")
    # class 7 lost half its recall: precision 1 at COCO's recall points 0, 0.01, ..., 0.5 (51 of 101), at every
    # IoU threshold; class 9 is perfect.  By size: the found boxes are medium, the missed one (area 10000) large.
    ap = (51 / 101 + 1.0) / 2
    assert metrics == pytest.approx({"bbox_mAP": ap, "bbox_mAP_50": ap, "bbox_mAP_75": ap, "bbox_mAP_s": -1.0,
                                     "bbox_mAP_m": 1.0, "bbox_mAP_l": 0.0}, abs=1e-4)
    only_image_1, _ = coco_metrics(gt, results, [1], "bbox")
    assert only_image_1["bbox_mAP"] == 1.0


def test_loose_boxes_pass_at_50_but_not_75(gt):
    results = [detection(1, 7, [10, 10, 100, 70]), detection(1, 9, [120, 120, 40, 56]),
               detection(2, 7, [50, 60, 100, 140])]  # IoU 0.71 each
    metrics, _ = coco_metrics(gt, results, [1, 2], "bbox")
    assert metrics["bbox_mAP_50"] == 1.0
    assert metrics["bbox_mAP_75"] == 0.0


def test_no_detections_is_zero_not_an_error(gt):
    metrics, summary = coco_metrics(gt, [], [1, 2], "bbox")
    assert metrics == {name: 0.0 for name in METRIC_NAMES}
    assert "no detections" in summary
