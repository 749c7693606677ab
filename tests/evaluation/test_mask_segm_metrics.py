"""COCO segm metrics: masks predicted, RLE-encoded image by image, scored by pycocotools next to the boxes."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from raydet.data.coco_writer import detections_to_coco
from raydet.data.datasets import CocoDataset, DetectionDataset
from raydet.data.masks import encode_masks
from raydet.data.problems import ProblemReport
from raydet.data.records import ReadResult, make_record
from raydet.engine.evaluation import DetectionCollector, predict
from raydet.evaluation.coco_metric import (
    METRIC_NAMES,
    SEGM_METRIC_NAMES,
    coco_from_dict,
    coco_metrics,
    prepare_segmentations,
)

HEIGHT, WIDTH = 120, 160
#: Polygons of true non-box shapes (x, y pairs): a triangle and a diamond in image 1, a triangle in image 2.
POLYGONS = {
    1: [(7, [[10, 10, 90, 10, 10, 70]]), (9, [[120, 40, 150, 70, 120, 100, 90, 70]])],
    2: [(7, [[30, 20, 130, 20, 80, 110]])],
}


def ground_truth_json() -> dict:
    """A COCO json with polygon segmentations; boxes and areas from the polygons."""
    images = [{"id": i, "file_name": f"{i}.png", "height": HEIGHT, "width": WIDTH} for i in POLYGONS]
    annotations = []
    for image_id, objects in POLYGONS.items():
        for category_id, polygon in objects:
            rle = mask_utils.merge(mask_utils.frPyObjects(polygon, HEIGHT, WIDTH))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "segmentation": polygon, "area": float(mask_utils.area(rle)),
                                "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 7, "name": "triangle"}, {"id": 9, "name": "diamond"}]}


def true_masks(image_id: int) -> np.ndarray:
    """``[K, H, W]`` uint8: the ground-truth masks of ``image_id``, rasterised as pycocotools does."""
    return np.stack([mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, HEIGHT, WIDTH)))
                     for _, polygon in POLYGONS[image_id]])


def boxes_of(masks: np.ndarray) -> np.ndarray:
    """``[K, 4]`` x1y1x2y2: each mask's tight box (pycocotools' ``toBbox``)."""
    xywh = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))))
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def detections(image_id: int, masks: np.ndarray, score: float = 0.9) -> dict:
    """Detections of ``image_id``: the true boxes and labels, ``masks`` as RLE dicts (what ``predict`` makes)."""
    labels = np.array([{7: 0, 9: 1}[category_id] for category_id, _ in POLYGONS[image_id]])
    return {"boxes": boxes_of(true_masks(image_id)), "scores": np.full(len(labels), score), "labels": labels,
            "masks": [{"size": [HEIGHT, WIDTH], "counts": c} for c in encode_masks(masks)]}


def box_filled(masks: np.ndarray) -> np.ndarray:
    """Each mask replaced by its filled tight box: a loose mask whose box is still perfect."""
    loose = np.zeros_like(masks)
    for k, (x1, y1, x2, y2) in enumerate(boxes_of(masks).astype(int)):
        loose[k, y1:y2, x1:x2] = 1
    return loose


def results_of(predictions: list[tuple[int, dict]]) -> list[dict]:
    return detections_to_coco([i for i, _ in predictions], [d for _, d in predictions], [7, 9])


PERFECT = [(i, detections(i, true_masks(i))) for i in POLYGONS]
LOOSE = [(i, detections(i, box_filled(true_masks(i)))) for i in POLYGONS]


@pytest.fixture
def coco_gt() -> COCO:
    return coco_from_dict(ground_truth_json())


@pytest.fixture
def coco_dataset(tmp_path) -> CocoDataset:
    ann_file = tmp_path / "val.json"
    ann_file.write_text(json.dumps(ground_truth_json()))
    return CocoDataset(str(ann_file), str(tmp_path), check_files=False)


def test_segm_metrics_are_pycocotools_on_the_written_files(tmp_path, coco_gt):
    ann_file, results_file = tmp_path / "gt.json", tmp_path / "results.json"
    ann_file.write_text(json.dumps(ground_truth_json()))
    predictions = [(1, detections(1, true_masks(1))), (2, detections(2, box_filled(true_masks(2)), score=0.5))]
    results_file.write_text(json.dumps(results_of(predictions)))  # what raydet.test --out writes
    metrics, summary = coco_metrics(coco_gt, json.loads(results_file.read_text()), [1, 2], "segm")

    with open(ann_file) as file, contextlib.redirect_stdout(io.StringIO()):
        direct_gt = COCO()
        direct_gt.dataset = json.load(file)
        direct_gt.createIndex()
        written = json.loads(results_file.read_text())
        segm_results = [{k: v for k, v in r.items() if k != "bbox"} for r in written]  # COCO's segm format: no box
        evaluator = COCOeval(direct_gt, direct_gt.loadRes(segm_results), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert metrics == {name: round(float(v), 4) for name, v in zip(SEGM_METRIC_NAMES, evaluator.stats)}
    assert 0 < metrics["segm_mAP"] < 1  # one perfect image, one loose: the comparison means something
    assert len(summary.splitlines()) == 12


def test_perfect_masks_score_one_and_loose_masks_with_perfect_boxes_less(coco_gt):
    for predictions, segm_map in ((PERFECT, 1.0), (LOOSE, None)):
        results = results_of(predictions)
        bbox, _ = coco_metrics(coco_gt, results, [1, 2], "bbox")
        segm, _ = coco_metrics(coco_gt, results, [1, 2], "segm")
        assert bbox["bbox_mAP"] == 1.0
        if segm_map is None:  # a triangle filled to its box has mask IoU about 0.5 with the triangle
            assert segm["segm_mAP"] < 0.7 and segm["segm_mAP_75"] < 1.0
        else:
            assert segm["segm_mAP"] == segm["segm_mAP_50"] == segm["segm_mAP_75"] == segm_map


def test_segm_sizes_detections_by_their_masks_not_their_boxes(coco_gt):
    # every object is medium (32^2 to 96^2 px); a false positive, scored highest, whose box is the whole
    # image (large) and whose mask a 3 px frame (1644 px: medium) overlapping nothing
    assert all(32 ** 2 < ann["area"] < 96 ** 2 for ann in ground_truth_json()["annotations"])
    frame = np.ones((1, HEIGHT, WIDTH), np.uint8)
    frame[:, 3:-3, 3:-3] = 0
    extra = {"boxes": np.array([[0, 0, WIDTH, HEIGHT]]), "scores": np.array([0.95]), "labels": np.array([0]),
             "masks": [{"size": [HEIGHT, WIDTH], "counts": c} for c in encode_masks(frame)]}
    results = results_of(PERFECT) + detections_to_coco([1], [extra], [7, 9])
    bbox, _ = coco_metrics(coco_gt, results, [1, 2], "bbox")
    segm, _ = coco_metrics(coco_gt, results, [1, 2], "segm")
    assert bbox["bbox_mAP_m"] == 1.0  # by its box the frame is large: no false positive among medium objects
    assert segm["segm_mAP_m"] < 1.0  # by its mask it is medium: a false positive there
    assert bbox["bbox_mAP_l"] == segm["segm_mAP_l"] == -1.0


def test_the_bbox_evaluation_and_the_given_results_ignore_the_masks(coco_gt):
    results = results_of(LOOSE)
    given = json.dumps(results)
    with_masks, with_summary = coco_metrics(coco_gt, results, [1, 2], "bbox")
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    assert (with_masks, with_summary) == coco_metrics(coco_gt, boxes_only, [1, 2], "bbox")
    assert set(with_masks) == set(METRIC_NAMES)
    coco_metrics(coco_gt, results, [1, 2], "segm")
    assert json.dumps(results) == given  # pycocotools' loadRes added nothing to them


def test_segm_needs_a_mask_for_every_detection_and_a_known_iou_type(coco_gt):
    results = results_of(PERFECT)
    del results[1]["segmentation"]
    with pytest.raises(ValueError, match="has no segmentation"):
        coco_metrics(coco_gt, results, [1, 2], "segm")
    with pytest.raises(ValueError, match="expected one of bbox, segm"):
        coco_metrics(coco_gt, results, [1, 2], "keypoints")
    assert coco_metrics(coco_gt, [], [1, 2], "segm")[0] == {name: 0.0 for name in SEGM_METRIC_NAMES}


def test_ground_truth_without_usable_segmentations_is_named():
    gt = ground_truth_json()
    assert prepare_segmentations(coco_from_dict(gt)) is None
    for ann in gt["annotations"]:
        ann.pop("segmentation")
    assert prepare_segmentations(coco_from_dict(gt)) == "the ground truth has no segmentation"
    gt = ground_truth_json()
    gt["annotations"][1]["segmentation"] = []
    assert "1 of 3 ground-truth objects have no segmentation (annotation 2 of image 1" in \
        prepare_segmentations(coco_from_dict(gt))
    gt["annotations"][1]["segmentation"] = [[1, 2, 3, 4, 5]]
    assert prepare_segmentations(coco_from_dict(gt)).startswith("annotation 2 of image 1: polygon")


def test_a_short_polygon_part_in_the_ground_truth_is_scored_as_raydet_reads_it(coco_gt):
    # pycocotools takes a first part of 4 numbers for a box (and refuses 2): such parts are left out, as in training
    gt = ground_truth_json()
    for ann in gt["annotations"]:
        ann["segmentation"] = [[1, 1, 2, 2], *ann["segmentation"]]
    with_short_parts = coco_from_dict(gt)
    assert prepare_segmentations(with_short_parts) is None
    results = results_of(LOOSE)
    assert coco_metrics(with_short_parts, results, [1, 2], "segm") == coco_metrics(coco_gt, results, [1, 2], "segm")


class FixedMaskDetector(torch.nn.Module):
    """A model that finds, in every image, the ground truth of image ``img_metas[i]["image_id"]`` with masks
    pasted at the image's ``ori_shape`` (``simple_test``); ``aug_test`` the same from the first view."""

    def __init__(self, with_masks: bool = True):
        super().__init__()
        self.with_masks = with_masks

    def simple_test(self, img, img_metas, rescale=True):
        assert rescale and img.dim() == 4
        results = []
        for meta in img_metas:
            assert tuple(meta["ori_shape"][:2]) == (HEIGHT, WIDTH)
            masks = true_masks(meta["image_id"])
            found = {"boxes": torch.as_tensor(boxes_of(masks), dtype=torch.float32),
                     "scores": torch.full((len(masks),), 0.9),
                     "labels": torch.as_tensor([{7: 0, 9: 1}[c] for c, _ in POLYGONS[meta["image_id"]]])}
            if self.with_masks:
                found["masks"] = torch.as_tensor(masks, dtype=torch.bool)
            results.append(found)
        return results

    def aug_test(self, imgs, img_metas, rescale=True):
        return self.simple_test(imgs[0], img_metas[0], rescale)


def batches(image_ids: list[int]) -> list[dict]:
    metas = [{"image_id": i, "ori_shape": (HEIGHT, WIDTH, 3)} for i in image_ids]
    return [{"img": torch.zeros(len(metas), 3, 64, 96), "img_metas": metas}]


def test_predict_encodes_each_images_masks_as_rle():
    model = FixedMaskDetector().train()
    found = predict(model, batches([1, 2]), torch.device("cpu"))
    assert model.training  # put back as it was
    assert [image_id for image_id, _ in found] == [1, 2]
    for image_id, detection in found:
        assert list(detection) == ["boxes", "scores", "labels", "masks"]
        assert all(isinstance(rle["counts"], bytes) and rle["size"] == [HEIGHT, WIDTH] for rle in detection["masks"])
        assert (mask_utils.decode(detection["masks"]).transpose(2, 0, 1) == true_masks(image_id)).all()
    views = {"img": [b["img"] for b in batches([2]) * 2], "img_metas": [b["img_metas"] for b in batches([2]) * 2]}
    (image_id, augmented), = predict(model, [views], torch.device("cpu"))
    assert image_id == 2 and augmented["masks"] == found[1][1]["masks"]
    (_, boxes_only), = predict(FixedMaskDetector(with_masks=False), batches([2]), torch.device("cpu"))
    assert list(boxes_only) == ["boxes", "scores", "labels"]


def test_detections_to_coco_writes_json_rle_that_decodes_to_the_masks():
    results = results_of(PERFECT)
    assert [r["image_id"] for r in results] == [1, 1, 2]
    written = json.loads(json.dumps(results))  # JSON-ready: counts are text
    for image_id in POLYGONS:
        segmentations = [r["segmentation"] for r in written if r["image_id"] == image_id]
        assert all(isinstance(s["counts"], str) and s["size"] == [HEIGHT, WIDTH] for s in segmentations)
        assert (mask_utils.decode(segmentations).transpose(2, 0, 1) == true_masks(image_id)).all()
    boxes_only = {k: v for k, v in PERFECT[0][1].items() if k != "masks"}
    boxes_only_results = detections_to_coco([1], [boxes_only], [7, 9])
    assert len(boxes_only_results) == len(boxes_only["boxes"]) > 0
    assert all("segmentation" not in r for r in boxes_only_results)
    with pytest.raises(ValueError, match="image 1: 1 masks for 2 boxes"):
        detections_to_coco([1], [{**PERFECT[0][1], "masks": PERFECT[0][1]["masks"][:1]}], [7, 9])


def test_score_adds_segm_metrics_when_the_predictions_carry_masks(coco_dataset):
    collector = DetectionCollector(coco_dataset, rank=0)
    metrics = collector.score(LOOSE, classwise=True)
    assert list(metrics) == [*METRIC_NAMES, *SEGM_METRIC_NAMES]
    assert metrics["bbox_mAP"] == 1.0 and metrics["segm_mAP"] < 0.7
    bbox_part, segm_part = collector.summary.split("\n\nsegm:\n")
    assert bbox_part.startswith("bbox:\n Average Precision") and segm_part.startswith(" Average Precision")
    assert "triangle" in segm_part  # classwise table of the masks too
    assert collector.pictured[0][1]["masks"] == LOOSE[0][1]["masks"]


def test_score_of_boxes_alone_is_what_it_was(coco_dataset):
    collector = DetectionCollector(coco_dataset, rank=0)
    boxes_only = [(i, {k: v for k, v in d.items() if k != "masks"}) for i, d in PERFECT]
    metrics = collector.score(boxes_only)
    assert (metrics, collector.summary) == coco_metrics(coco_from_dict(ground_truth_json()),
                                                        results_of(boxes_only), [1, 2], "bbox")
    gt = coco_from_dict(ground_truth_json())  # and pycocotools' own bbox evaluation, not raydet's
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(results_of(boxes_only)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert list(metrics.values()) == [round(float(v), 4) for v in evaluator.stats[:6]]


def records_dataset(with_masks: bool) -> DetectionDataset:
    """The ground truth as records (a dataset that is not a ``CocoDataset``), with or without their masks."""
    records = [make_record(i, f"{i}.png", HEIGHT, WIDTH, boxes_of(true_masks(i)),
                           [{7: 0, 9: 1}[c] for c, _ in POLYGONS[i]],
                           masks=encode_masks(true_masks(i)) if with_masks else None) for i in POLYGONS]
    return DetectionDataset(ReadResult(records, ["triangle", "diamond"], [7, 9]), [], ProblemReport(),
                            "records.json", "images", filter_empty_gt=False)


def test_masks_without_ground_truth_segmentations_are_not_scored():
    collector = DetectionCollector(records_dataset(with_masks=False), rank=0)
    metrics = collector.score(PERFECT)
    assert list(metrics) == list(METRIC_NAMES) and metrics["bbox_mAP"] == 1.0
    assert collector.summary.endswith("segm:\nno segm metrics: the ground truth has no segmentation")


def test_records_with_masks_are_the_ground_truth_of_other_datasets(coco_dataset):
    by_records = DetectionCollector(records_dataset(with_masks=True), rank=0).score(LOOSE)
    by_json = DetectionCollector(coco_dataset, rank=0).score(LOOSE)
    assert by_records == by_json and 0 < by_records["segm_mAP"] < 0.7
