"""Box precision and recall at one IoU: greedy matching in score order, ignored boxes, best-F1 threshold."""
from __future__ import annotations

import numpy as np
import pytest

from raydet.evaluation.box_pr import match_image, match_split

pytestmark = pytest.mark.timeout(30)

GT = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32)


def test_a_ground_truth_box_is_matched_once_by_the_highest_scoring_detection():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 0, 30, 6]], np.float32)  # IoU 1, 0.9 (same box), 0.6
    true_positive, counted = match_image(GT, np.zeros(3, bool), boxes, np.array([0.9, 0.8, 0.7]), iou_thr=0.4)
    assert true_positive.tolist() == [True, False, True] and counted.all()  # the duplicate is a false positive
    true_positive, _ = match_image(GT, np.zeros(3, bool), boxes, np.array([0.9, 0.8, 0.7]), iou_thr=0.7)
    assert true_positive.tolist() == [True, False, False]  # at 0.7 the box with IoU 0.6 is a miss too


def test_detections_on_ignored_boxes_count_neither_way_and_ignored_boxes_are_not_missed():
    ignore = np.array([False, False, True])
    boxes = np.array([[40, 0, 50, 10], [60, 0, 70, 10]], np.float32)  # on the ignored box; on nothing
    true_positive, counted = match_image(GT, ignore, boxes, np.array([0.9, 0.8]), iou_thr=0.4)
    assert true_positive.tolist() == [False, False] and counted.tolist() == [False, True]
    matched = match_split([(GT, ignore)], [(boxes, np.array([0.9, 0.8]))])
    assert matched.num_ground_truth == 2
    assert matched.at(0.0) == {"box_precision": 0.0, "box_recall": 0.0, "box_f1": 0.0}


def test_precision_recall_by_threshold_and_the_best_f1_threshold_across_images():
    second = np.array([[0, 0, 10, 10]], np.float32)
    detections = [(np.array([[0, 0, 10, 10], [20, 0, 30, 10], [80, 0, 90, 10]], np.float32), np.array([0.9, 0.3, 0.6])),
                  (np.zeros((0, 4), np.float32), np.zeros(0))]  # the second image: one box, no detection
    matched = match_split([(GT, np.zeros(3, bool)), (second, np.zeros(1, bool))], detections, iou_thr=0.4)
    assert matched.num_ground_truth == 4
    assert matched.at(0.9) == {"box_precision": 1.0, "box_recall": 0.25, "box_f1": 0.4}
    assert matched.at(0.5) == {"box_precision": 0.5, "box_recall": 0.25, "box_f1": pytest.approx(1 / 3, abs=1e-4)}
    assert matched.at(0.0) == {"box_precision": pytest.approx(2 / 3, abs=1e-4), "box_recall": 0.5,
                               "box_f1": pytest.approx(4 / 7, abs=1e-4)}
    assert matched.best_f1_threshold() == pytest.approx(0.3)  # F1 4/7 beats 0.4 and 1/3


def test_the_best_f1_threshold_is_the_one_a_scan_of_every_threshold_finds():
    rng = np.random.default_rng(0)
    ground_truth, detections = [], []
    for _ in range(20):
        corners = rng.uniform(0, 200, (8, 2))
        gt = np.concatenate([corners, corners + rng.uniform(10, 40, (8, 2))], 1).astype(np.float32)
        boxes = np.concatenate([gt + rng.normal(0, 5, gt.shape), gt[:3] + 30]).astype(np.float32)
        ground_truth.append((gt, rng.random(8) < 0.1))
        detections.append((boxes, np.round(rng.random(len(boxes)), 2)))  # rounded: tied scores
    matched = match_split(ground_truth, detections, iou_thr=0.4)
    scan = {float(t): matched.at(float(t))["box_f1"] for t in np.unique(matched.scores[matched.counted])}
    chosen = matched.best_f1_threshold()
    assert chosen in scan and scan[chosen] == max(scan.values())
    assert scan[chosen] > 0.3 and len(scan) > 50  # a real trade-off to choose in
