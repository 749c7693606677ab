"""torchvision's detectors as the reference for raydet's: models, matched pre-processing, comparisons.

Pre-processing is written out here rather than borrowed from either side:
torchvision's ``GeneralizedRCNNTransform`` (eval and train) normalises each image,
resizes it bilinearly by ``min(min_size / short side, max_size / long side)``
(``recompute_scale_factor=True``) and pads the batch bottom/right to a multiple of
32; raydet receives exactly that tensor plus the ``img_metas`` and ground truth of
the Batch contract.
"""
from __future__ import annotations

import math

import torch
import torchvision
from torch.nn import functional as F

from raydet.builder import build_model
from raydet.config import load_config
from raydet.models.torchvision_weights import convert_torchvision_state_dict
from tests.helpers import REPO

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NUM_CLASSES = 5
# The parity tests' two images (heights and widths), their ground truth (original-image pixels) and
# torchvision's names of raydet's losses.
IMAGE_SIZES = [(100, 200), (120, 150)]
GT_BOXES = [torch.tensor([[10.0, 20.0, 80.0, 90.0], [30.0, 5.0, 60.0, 60.0], [120.0, 30.0, 190.0, 95.0]]),
            torch.tensor([[50.0, 40.0, 140.0, 110.0]])]
GT_LABELS = [torch.tensor([1, 3, 0]), torch.tensor([4])]
TORCHVISION_LOSS_NAMES = {
    "retinanet": {"classification": "loss_cls", "bbox_regression": "loss_bbox"},
    "fcos": {"classification": "loss_cls", "bbox_regression": "loss_bbox", "bbox_ctrness": "loss_centerness"},
    "fasterrcnn": {"loss_objectness": "loss_rpn_cls", "loss_rpn_box_reg": "loss_rpn_bbox",
                   "loss_classifier": "loss_cls", "loss_box_reg": "loss_bbox"},
}

# arch: (torchvision builder, raydet base config, key path of num_classes, torchvision has a background class)
ARCHS = {
    "retinanet": (torchvision.models.detection.retinanet_resnet50_fpn, "retinanet_r50_fpn.yaml", "bbox_head", False),
    "fcos": (torchvision.models.detection.fcos_resnet50_fpn, "fcos_r50_fpn.yaml", "bbox_head", False),
    "fasterrcnn": (torchvision.models.detection.fasterrcnn_resnet50_fpn, "faster_rcnn_r50_fpn.yaml",
                   "roi_head.bbox_head", True),
    "maskrcnn": (torchvision.models.detection.maskrcnn_resnet50_fpn, "mask_rcnn_r50_fpn.yaml",
                 "roi_head.bbox_head", True),
}


def torchvision_model(arch: str, min_size: int, max_size: int, num_classes: int = NUM_CLASSES,
                      seed: int = 0) -> torch.nn.Module:
    """torchvision's ``arch`` with seeded random weights (``weights=None``: BatchNorm, all layers trainable).

    The class outputs are re-drawn so that there are detections of several classes
    to compare: with torchvision's init (prior 0.01) no single-stage score passes
    the threshold, so their logits get std 0.05 and bias 0; Faster R-CNN's random
    ReLU features share one large direction that makes one class win everywhere, so
    its classifier rows are made zero-mean.
    """
    builder, _, _, has_background = ARCHS[arch]
    torch.manual_seed(seed)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes + has_background,
                    min_size=min_size, max_size=max_size)
    logits = model.roi_heads.box_predictor.cls_score if has_background else model.head.classification_head.cls_logits
    with torch.no_grad():
        torch.nn.init.normal_(logits.weight, std=0.01 if has_background else 0.05)
        if has_background:
            logits.weight -= logits.weight.mean(dim=1, keepdim=True)
        else:
            logits.bias.zero_()
    return model


def raydet_model(arch: str, num_classes: int = NUM_CLASSES, overrides: tuple[str, ...] = ()) -> torch.nn.Module:
    """raydet's ``configs/_base_/models/<arch>_r50_fpn.yaml`` with torchvision's ``weights=None`` backbone settings."""
    _, config_name, head_path, _ = ARCHS[arch]
    config = load_config(REPO / "configs/_base_/models" / config_name, [
        f"model.{head_path}.num_classes={num_classes}",
        *([f"model.roi_head.mask_head.num_classes={num_classes}"] if arch == "maskrcnn" else []),
        "model.backbone.init_cfg=null",  # no download; weights come from the torchvision model
        "model.backbone.norm=BN",  # torchvision uses BatchNorm2d when nothing is pretrained …
        "model.backbone.norm_eval=false",
        "model.backbone.frozen_stages=-1",  # … and trains every layer
        *overrides,
    ])
    return build_model(config)


def converted_pair(arch: str, min_size: int, max_size: int,
                   overrides: tuple[str, ...] = ()) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(torchvision model, raydet model holding the same weights)."""
    reference = torchvision_model(arch, min_size, max_size)
    model = raydet_model(arch, overrides=overrides)
    model.load_state_dict(convert_torchvision_state_dict(reference.state_dict(), arch), strict=True)
    return reference, model


def preprocess(images: list[torch.Tensor], min_size: int, max_size: int,
               gt_bboxes: list[torch.Tensor] | None = None,
               ) -> tuple[torch.Tensor, list[dict], list[torch.Tensor] | None]:
    """torchvision's eval pre-processing of ``images`` ``[3, h, w]`` in 0..1 -> raydet's Batch.

    Returns ``img [B, 3, H, W]``, ``img_metas`` and, given original-frame ``gt_bboxes``,
    the boxes in the resized frame (scaled like torchvision's ``resize_boxes``).
    """
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    resized, metas = [], []
    for image in images:
        height, width = image.shape[-2:]
        scale = min(min_size / min(height, width), max_size / max(height, width))
        normalized = (image - mean) / std  # torchvision normalises first, then resizes
        x = F.interpolate(normalized[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                          align_corners=False)[0]
        new_height, new_width = x.shape[-2:]
        resized.append(x)
        w_scale, h_scale = new_width / width, new_height / height
        metas.append({"ori_shape": (height, width), "img_shape": (new_height, new_width),
                      "scale_factor": [w_scale, h_scale, w_scale, h_scale], "flip": False, "flip_direction": None,
                      "image_id": len(metas)})
    pad_h = max(math.ceil(x.shape[1] / 32) * 32 for x in resized)
    pad_w = max(math.ceil(x.shape[2] / 32) * 32 for x in resized)
    batch = torch.zeros(len(resized), 3, pad_h, pad_w)
    for index, (x, meta) in enumerate(zip(resized, metas)):
        batch[index, :, :x.shape[1], :x.shape[2]] = x
        meta["pad_shape"] = (pad_h, pad_w)
    resized_boxes = None
    if gt_bboxes is not None:
        resized_boxes = [boxes * torch.tensor(meta["scale_factor"]) for boxes, meta in zip(gt_bboxes, metas)]
    return batch, metas, resized_boxes


def assert_same_detections(expected: dict, actual: dict, label_offset: int = 0,
                           box_tol: float = 1e-3, score_tol: float = 1e-4) -> list[int]:
    """Same number of detections and a one-to-one match: same label, boxes within ``box_tol`` px,
    scores within ``score_tol``.  (Detections whose scores tie to within float rounding may come
    out of NMS in either order, so they are matched, not zipped.)  Returns, for each expected
    detection, the index of its match in ``actual``."""
    assert len(expected["boxes"]) == len(actual["boxes"]), (len(expected["boxes"]), len(actual["boxes"]))
    unmatched = list(range(len(actual["boxes"])))
    matches = []
    for box, score, label in zip(expected["boxes"], expected["scores"], expected["labels"]):
        for position, j in enumerate(unmatched):
            if (int(actual["labels"][j]) + label_offset == int(label)
                    and float((actual["boxes"][j] - box).abs().max()) <= box_tol
                    and abs(float(actual["scores"][j] - score)) <= score_tol):
                matches.append(unmatched.pop(position))
                break
        else:
            raise AssertionError(f"no raydet detection matches torchvision's "
                                 f"{box.tolist()} {float(score):.6f} {int(label)}")
    return matches
