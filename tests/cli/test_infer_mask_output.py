"""raydet.infer's predictions.json entries from a mask detector: COCO results with RLE masks and file names."""
from __future__ import annotations

import json

import numpy as np
import torch
from pycocotools import mask as mask_utils

from raydet.engine.evaluation import to_detections
from raydet.infer import results_of_batch


def model_output(height: int, width: int) -> dict[str, torch.Tensor]:
    """One image's Mask R-CNN output: two boxes, their masks pasted at ``height`` x ``width``."""
    masks = torch.zeros(2, height, width, dtype=torch.bool)
    masks[0, 5:20, 10:40] = True
    masks[1, 30:45, 3:9] = True
    return {"boxes": torch.tensor([[10.0, 5.0, 40.0, 20.0], [3.0, 30.0, 9.0, 45.0]]),
            "scores": torch.tensor([0.9, 0.4]), "labels": torch.tensor([1, 0]), "masks": masks}


def test_each_detection_gets_its_mask_as_json_rle_and_its_image_file():
    outputs = {0: model_output(50, 60), 1: model_output(64, 48)}
    found = [(image_id, to_detections(output)) for image_id, output in outputs.items()]
    paths = ["/photos/a.jpg", "/photos/b.jpg"]
    written = json.loads(json.dumps(results_of_batch(found, [3, 8], paths)))  # as predictions.json holds them
    assert [(r["image_id"], r["category_id"], r["file_name"]) for r in written] == [
        (0, 8, "/photos/a.jpg"), (0, 3, "/photos/a.jpg"), (1, 8, "/photos/b.jpg"), (1, 3, "/photos/b.jpg")]
    assert set(written[0]) == {"image_id", "category_id", "bbox", "score", "segmentation", "file_name"}
    for image_id, output in outputs.items():
        segmentations = [r["segmentation"] for r in written if r["image_id"] == image_id]
        assert all(s["size"] == list(output["masks"].shape[1:]) for s in segmentations)
        assert np.array_equal(mask_utils.decode(segmentations).transpose(2, 0, 1), output["masks"].numpy())


def test_a_box_detector_writes_no_segmentation():
    output = {k: v for k, v in model_output(50, 60).items() if k != "masks"}
    written = results_of_batch([(0, to_detections(output))], [3, 8], ["/photos/a.jpg"])
    assert [set(r) for r in written] == [{"image_id", "category_id", "bbox", "score", "file_name"}] * 2
