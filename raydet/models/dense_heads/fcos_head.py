"""FCOS head (arXiv 1904.01355 / 2006.09214): per-point classes, side distances and centre-ness."""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...registry import MODELS
from ..conv_module import ConvModule
from ..task_utils import AnchorGenerator, CenterSamplingAssigner, DistancePointBBoxCoder
from .base_dense_head import BaseDenseHead
from .dense_outputs import flatten_level, flatten_levels, select_detections


@MODELS.register()
class FCOSHead(BaseDenseHead):
    """Two towers of 3x3 conv + norm + ReLU; class logits on one, distances and centre-ness on the other.

    The variant torchvision implements (FCOS "improved", the paper's 2020
    version): GroupNorm towers, centre-ness on the regression tower, distances
    ``relu(conv)`` in units of the stride, centre sampling, GIoU box loss.
    Losses (torchvision's numerics): focal loss over all points, box and
    centre-ness losses over the positives, each divided by the number of positives
    in the batch.  Score = ``sqrt(sigmoid(cls) * sigmoid(centerness))``.
    mmdetection's FCOS differs (learnable per-level scales, IoU loss weighted by
    centre-ness, score without the square root).

    Args:
        num_classes: object classes (no background).
        in_channels: channels of every input level.
        prior_generator: one square prior per cell, side = stride (an ``AnchorGenerator``).
        bbox_coder / assigner / loss_cls / loss_bbox / loss_centerness: the parts.
        feat_channels, stacked_convs, norm, num_groups: the towers.
        conv_bias: bias in the tower convs (torchvision keeps it in front of GroupNorm).
        prior_prob: initial foreground probability.
    """

    def __init__(self, num_classes: int, in_channels: int, prior_generator: AnchorGenerator,
                 bbox_coder: DistancePointBBoxCoder, assigner: CenterSamplingAssigner, loss_cls: nn.Module,
                 loss_bbox: nn.Module, loss_centerness: nn.Module, feat_channels: int = 256, stacked_convs: int = 4,
                 norm: Literal["GN"] | None = "GN", num_groups: int = 32, conv_bias: bool = True,
                 prior_prob: float = 0.01, score_thr: float = 0.2, nms_pre: int = 1000, nms_iou_thr: float = 0.6,
                 max_per_img: int = 100):
        if prior_generator.num_base_anchors != 1:
            raise ValueError("FCOS needs one prior per cell (one size and aspect_ratios: [1.0])")
        super().__init__(num_classes, nms_iou_thr, max_per_img)
        self.prior_generator = prior_generator
        self.bbox_coder = bbox_coder
        self.assigner = assigner
        self.loss_cls, self.loss_bbox, self.loss_centerness = loss_cls, loss_bbox, loss_centerness
        self.score_thr, self.nms_pre = score_thr, nms_pre

        def tower() -> nn.Sequential:
            return nn.Sequential(*(ConvModule(in_channels if i == 0 else feat_channels, feat_channels, norm=norm,
                                              num_groups=num_groups, bias=conv_bias) for i in range(stacked_convs)))

        self.cls_convs, self.reg_convs = tower(), tower()
        tower_out = feat_channels if stacked_convs else in_channels
        self.conv_cls = nn.Conv2d(tower_out, num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(tower_out, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(tower_out, 1, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: class logits ``[B, K, H, W]``, distances ``[B, 4, H, W]`` (>= 0),
        centre-ness logits ``[B, 1, H, W]``."""
        cls_scores, bbox_preds, centernesses = [], [], []
        for x in feats:
            cls_scores.append(self.conv_cls(self.cls_convs(x)))
            reg_feat = self.reg_convs(x)
            bbox_preds.append(F.relu(self.conv_reg(reg_feat)))
            centernesses.append(self.conv_centerness(reg_feat))
        return cls_scores, bbox_preds, centernesses

    def priors(self, feats: list[Tensor]) -> list[Tensor]:
        return self.prior_generator.grid_anchors([x.shape[-2:] for x in feats], feats[0].device)

    def forward_train(self, feats: list[Tensor], img_metas: list[dict], gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor]) -> dict[str, Tensor]:
        cls_scores, bbox_preds, centernesses = self(feats)
        return self.loss(cls_scores, bbox_preds, centernesses, self.priors(feats), gt_bboxes, gt_labels)

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], centernesses: list[Tensor],
             priors: list[Tensor], gt_bboxes: list[Tensor], gt_labels: list[Tensor]) -> dict[str, Tensor]:
        """``loss_cls``, ``loss_bbox``, ``loss_centerness``; ``priors`` per level, shared by the images."""
        num_priors_per_level = [len(p) for p in priors]
        all_priors = torch.cat(priors)
        cls_logits = flatten_levels(cls_scores, self.num_classes)  # [B, N, K]
        distances = flatten_levels(bbox_preds, 4)  # [B, N, 4]
        centerness = flatten_levels(centernesses, 1)[..., 0]  # [B, N]
        assigned = torch.stack([self.assigner.assign(boxes, all_priors, num_priors_per_level) for boxes in gt_bboxes])
        image_index, prior_index = torch.where(assigned >= 0)  # the positives, image-major
        gt_index = assigned[image_index, prior_index]
        pos_gt_boxes = torch.cat([boxes[gt_index[image_index == i]] for i, boxes in enumerate(gt_bboxes)])
        pos_labels = torch.cat([labels[gt_index[image_index == i]] for i, labels in enumerate(gt_labels)])
        num_foreground = max(1, image_index.numel())

        targets = torch.zeros_like(cls_logits)
        targets[image_index, prior_index, pos_labels] = 1.0
        loss_cls = self.loss_cls(cls_logits, targets, avg_factor=num_foreground)

        pos_priors = all_priors[prior_index]
        pos_boxes = self.bbox_coder.decode(pos_priors, distances[image_index, prior_index])
        loss_bbox = self.loss_bbox(pos_boxes, pos_gt_boxes, avg_factor=num_foreground)

        target_distances = self.bbox_coder.encode(pos_priors, pos_gt_boxes)
        left_right, top_bottom = target_distances[:, [0, 2]], target_distances[:, [1, 3]]
        centerness_targets = torch.sqrt((left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0])
                                        * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0]))
        loss_centerness = self.loss_centerness(centerness[image_index, prior_index], centerness_targets,
                                               avg_factor=num_foreground)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}

    def simple_test(self, feats: list[Tensor], img_metas: list[dict]) -> list[dict[str, Tensor]]:
        """Detections per image in its resized frame (``img_shape``), clipped to it."""
        cls_scores, bbox_preds, centernesses = self(feats)
        priors = self.priors(feats)
        results = []
        for index, meta in enumerate(img_metas):
            scores = [torch.sqrt(torch.sigmoid(flatten_level(s[index:index + 1], self.num_classes)[0])
                                 * torch.sigmoid(flatten_level(c[index:index + 1], 1)[0]))
                      for s, c in zip(cls_scores, centernesses)]
            results.append(select_detections(
                scores, [flatten_level(p[index:index + 1], 4)[0] for p in bbox_preds], priors,
                self.bbox_coder.decode, tuple(meta["img_shape"][:2]),
                self.score_thr, self.nms_pre, self.nms_iou_thr, self.max_per_img))
        return results
