"""The second stage of Faster R-CNN: sample proposals, pool their features, classify and refine."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from ...registry import MODELS
from ..task_utils import MaxIoUAssigner, RandomSampler
from .base_roi_head import BaseRoIHead


@MODELS.register()
class StandardRoIHead(BaseRoIHead):
    """Proposals -> ``bbox_roi_extractor`` -> ``bbox_head`` -> losses or detections.

    Training (torchvision's order): the ground-truth boxes are appended to each
    image's proposals (``add_gt_as_proposals``), proposals are assigned and
    ``sampler`` draws the RoIs the box head is trained on.

    Testing: per image, class-specific boxes are decoded and clipped; (box, class)
    pairs scoring above ``score_thr`` and larger than ``min_bbox_size`` go through
    class-wise NMS; the ``max_per_img`` best are kept.

    Args:
        bbox_roi_extractor: e.g. ``SingleRoIExtractor``.
        bbox_head: e.g. ``Shared2FCBBoxHead``; its ``num_classes`` is the RoI head's.
        assigner / sampler: proposal assignment and sampling.
    """

    def __init__(self, bbox_roi_extractor: nn.Module, bbox_head: nn.Module, assigner: MaxIoUAssigner,
                 sampler: RandomSampler, add_gt_as_proposals: bool = True, score_thr: float = 0.05,
                 nms_iou_thr: float = 0.5, max_per_img: int = 100, min_bbox_size: float = 1e-2):
        super().__init__(bbox_head.num_classes, nms_iou_thr, max_per_img)
        self.bbox_roi_extractor = bbox_roi_extractor
        self.bbox_head = bbox_head
        self.assigner = assigner
        self.sampler = sampler
        self.add_gt_as_proposals = add_gt_as_proposals
        self.score_thr = score_thr
        self.min_bbox_size = min_bbox_size

    @staticmethod
    def to_rois(boxes: list[Tensor]) -> Tensor:
        """Per-image ``[N_i, 4]`` -> ``[sum N_i, 5]`` (image index, x1, y1, x2, y2)."""
        indices = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)])
        return torch.cat([indices, torch.cat(boxes)], dim=1)

    def forward_train(self, feats: list[Tensor], proposals: list[Tensor], img_metas: list[dict],
                      gt_bboxes: list[Tensor], gt_labels: list[Tensor]) -> dict[str, Tensor]:
        sampled_boxes, sampled_labels, pos_target_deltas = [], [], []
        for boxes, gt_boxes, gt_classes in zip(proposals, gt_bboxes, gt_labels):
            if self.add_gt_as_proposals:
                boxes = torch.cat([boxes, gt_boxes.to(boxes.dtype)])
            assigned = self.assigner.assign(gt_boxes, boxes)
            pos_mask, neg_mask = self.sampler.sample(assigned)
            sampled = torch.where(pos_mask | neg_mask)[0]  # in proposal order, as torchvision keeps them
            boxes, assigned = boxes[sampled], assigned[sampled]
            is_pos = assigned >= 0
            labels = torch.full_like(assigned, self.num_classes)  # background: num_classes
            labels[is_pos] = gt_classes[assigned[is_pos]]
            sampled_boxes.append(boxes)
            sampled_labels.append(labels)
            pos_target_deltas.append(self.bbox_head.bbox_coder.encode(boxes[is_pos], gt_boxes[assigned[is_pos]]))
        rois = self.to_rois(sampled_boxes)
        cls_score, bbox_pred = self.bbox_head(self.bbox_roi_extractor(feats, rois))
        return self.bbox_head.loss(cls_score, bbox_pred, torch.cat(sampled_labels), torch.cat(pos_target_deltas))

    def simple_test(self, feats: list[Tensor], proposals: list[Tensor],
                    img_metas: list[dict]) -> list[dict[str, Tensor]]:
        """Detections per image in its resized frame (``img_shape``), clipped to it."""
        rois = self.to_rois(proposals)
        cls_score, bbox_pred = self.bbox_head(self.bbox_roi_extractor(feats, rois))
        boxes, scores = self.bbox_head.decode(rois[:, 1:], cls_score, bbox_pred)
        num_classes = scores.shape[1]
        results = []
        for image_boxes, image_scores, meta in zip(boxes.split([len(p) for p in proposals]),
                                                   scores.split([len(p) for p in proposals]), img_metas):
            image_boxes = clip_boxes_to_image(image_boxes, tuple(meta["img_shape"][:2])).reshape(-1, 4)
            labels = torch.arange(num_classes, device=image_scores.device).repeat(image_scores.shape[0])
            image_scores = image_scores.reshape(-1)
            keep = torch.where(image_scores > self.score_thr)[0]
            image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
            keep = remove_small_boxes(image_boxes, self.min_bbox_size)
            image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
            keep = batched_nms(image_boxes, image_scores, labels, self.nms_iou_thr)[:self.max_per_img]
            results.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": labels[keep]})
        return results
