"""RetinaNet head (arXiv 1708.02002): class and box subnets over every pyramid level."""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from ...registry import MODELS
from ..conv_module import ConvModule
from ..task_utils import IGNORED, AnchorGenerator, DeltaXYWHBBoxCoder, MaxIoUAssigner
from .base_dense_head import BaseDenseHead
from .dense_outputs import flatten_level, flatten_levels, select_detections


@MODELS.register()
class RetinaHead(BaseDenseHead):
    """Two towers of ``stacked_convs`` 3x3 convs + ReLU, then per-anchor class logits and box deltas.

    Training (torchvision's numerics): anchors are assigned by ``assigner``; the
    classification loss runs over every anchor that is not ignored, the box loss
    over the positives; both are normalised per image by its number of positives
    (at least 1) and averaged over the images.  (mmdetection normalises by the
    positives of the whole batch instead.)

    Testing: ``select_detections`` with ``score_thr``, ``nms_pre`` (per level),
    ``nms_iou_thr`` and ``max_per_img``.

    Args:
        num_classes: object classes (no background).
        in_channels: channels of every input level.
        anchor_generator / bbox_coder / assigner / loss_cls / loss_bbox: the parts.
        feat_channels: channels of the tower convs.
        stacked_convs: convs per tower.
        norm: ``GN`` puts GroupNorm(32) in the towers (RetinaNet v2); default none.
        prior_prob: initial foreground probability (bias of the class logits).
    """

    def __init__(self, num_classes: int, in_channels: int, anchor_generator: AnchorGenerator,
                 bbox_coder: DeltaXYWHBBoxCoder, assigner: MaxIoUAssigner, loss_cls: nn.Module, loss_bbox: nn.Module,
                 feat_channels: int = 256, stacked_convs: int = 4, norm: Literal["GN"] | None = None,
                 prior_prob: float = 0.01, score_thr: float = 0.05, nms_pre: int = 1000, nms_iou_thr: float = 0.5,
                 max_per_img: int = 300):
        super().__init__(num_classes, nms_iou_thr, max_per_img)
        self.anchor_generator = anchor_generator
        self.bbox_coder = bbox_coder
        self.assigner = assigner
        self.loss_cls = loss_cls
        self.loss_bbox = loss_bbox
        self.score_thr, self.nms_pre = score_thr, nms_pre
        num_anchors = anchor_generator.num_base_anchors
        self.cls_convs = nn.Sequential(*(ConvModule(in_channels if i == 0 else feat_channels, feat_channels, norm=norm)
                                         for i in range(stacked_convs)))
        self.reg_convs = nn.Sequential(*(ConvModule(in_channels if i == 0 else feat_channels, feat_channels, norm=norm)
                                         for i in range(stacked_convs)))
        tower_out = feat_channels if stacked_convs else in_channels
        self.retina_cls = nn.Conv2d(tower_out, num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(tower_out, num_anchors * 4, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class logits ``[B, A*K, H, W]`` and box deltas ``[B, A*4, H, W]``."""
        cls_scores = [self.retina_cls(self.cls_convs(x)) for x in feats]
        bbox_preds = [self.retina_reg(self.reg_convs(x)) for x in feats]
        return cls_scores, bbox_preds

    def priors(self, feats: list[Tensor]) -> list[Tensor]:
        return self.anchor_generator.grid_anchors([x.shape[-2:] for x in feats], feats[0].device)

    def forward_train(self, feats: list[Tensor], img_metas: list[dict], gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor]) -> dict[str, Tensor]:
        cls_scores, bbox_preds = self(feats)
        return self.loss(cls_scores, bbox_preds, torch.cat(self.priors(feats)), gt_bboxes, gt_labels)

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], anchors: Tensor, gt_bboxes: list[Tensor],
             gt_labels: list[Tensor]) -> dict[str, Tensor]:
        """``loss_cls`` and ``loss_bbox``; ``anchors [N, 4]`` are shared by the images."""
        cls_logits = flatten_levels(cls_scores, self.num_classes)  # [B, N, K]
        deltas = flatten_levels(bbox_preds, 4)  # [B, N, 4]
        loss_cls, loss_bbox = cls_logits.new_zeros(()), cls_logits.new_zeros(())
        for image_logits, image_deltas, boxes, labels in zip(cls_logits, deltas, gt_bboxes, gt_labels):
            assigned = self.assigner.assign(boxes, anchors)
            foreground = torch.where(assigned >= 0)[0]
            num_foreground = max(1, foreground.numel())
            targets = torch.zeros_like(image_logits)
            targets[foreground, labels[assigned[foreground]]] = 1.0
            valid = assigned != IGNORED
            loss_cls = loss_cls + self.loss_cls(image_logits[valid], targets[valid], avg_factor=num_foreground)
            target_deltas = self.bbox_coder.encode(anchors[foreground], boxes[assigned[foreground]])
            loss_bbox = loss_bbox + self.loss_bbox(image_deltas[foreground], target_deltas, avg_factor=num_foreground)
        num_images = max(1, len(gt_bboxes))
        return {"loss_cls": loss_cls / num_images, "loss_bbox": loss_bbox / num_images}

    def simple_test(self, feats: list[Tensor], img_metas: list[dict]) -> list[dict[str, Tensor]]:
        """Detections per image in its resized frame (``img_shape``), clipped to it."""
        cls_scores, bbox_preds = self(feats)
        anchors = self.priors(feats)
        results = []
        for index, meta in enumerate(img_metas):
            results.append(select_detections(
                [torch.sigmoid(flatten_level(s[index:index + 1], self.num_classes)[0]) for s in cls_scores],
                [flatten_level(p[index:index + 1], 4)[0] for p in bbox_preds],
                anchors, self.bbox_coder.decode, tuple(meta["img_shape"][:2]),
                self.score_thr, self.nms_pre, self.nms_iou_thr, self.max_per_img))
        return results
