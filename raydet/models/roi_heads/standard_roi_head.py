"""The second stage of Faster / Mask R-CNN: sample proposals, pool their features, classify and refine
them, and (with a mask branch) segment the positives / the detections."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from ...registry import MODELS
from ..task_utils import MaxIoUAssigner, RandomSampler
from .base_roi_head import BaseRoIHead
from .fcn_mask_head import FCNMaskHead


class SampledRoIs(NamedTuple):
    """One image's RoIs drawn for training, in proposal order.

    ``boxes [S, 4]`` x1y1x2y2; ``labels [S]`` int64 (``num_classes``: background);
    ``assigned_gt [S]`` int64 index of the matched ground truth (negative for background);
    ``positive [S]`` bool.
    """

    boxes: Tensor
    labels: Tensor
    assigned_gt: Tensor
    positive: Tensor


@MODELS.register()
class StandardRoIHead(BaseRoIHead):
    """Proposals -> ``bbox_roi_extractor`` -> ``bbox_head`` -> losses or detections; with
    ``mask_roi_extractor`` and ``mask_head`` also instance masks (Mask R-CNN).

    Training (torchvision's order): the ground-truth boxes are appended to each
    image's proposals (``add_gt_as_proposals``), proposals are assigned and
    ``sampler`` draws the RoIs the box head is trained on.  The mask branch pools
    the sampled positives and learns their ground-truth masks (``loss_mask``).

    Testing: per image, class-specific boxes are decoded and clipped; (box, class)
    pairs scoring above ``score_thr`` and larger than ``min_bbox_size`` go through
    class-wise NMS; the ``max_per_img`` best are kept.  The mask branch pools the
    detected boxes and gives each detection its class's ``mask_probs``.

    Args:
        bbox_roi_extractor: e.g. ``SingleRoIExtractor``.
        bbox_head: e.g. ``Shared2FCBBoxHead``; its ``num_classes`` is the RoI head's.
        assigner / sampler: proposal assignment and sampling.
        mask_roi_extractor: the mask branch's pooling (``SingleRoIExtractor``, output size 14);
            given together with ``mask_head``.
        mask_head: ``FCNMaskHead`` with the box head's ``num_classes``.
        mask_thr_binary: the probability from which a pasted mask's pixel is foreground.
    """

    def __init__(self, bbox_roi_extractor: nn.Module, bbox_head: nn.Module, assigner: MaxIoUAssigner,
                 sampler: RandomSampler, add_gt_as_proposals: bool = True, score_thr: float = 0.05,
                 nms_iou_thr: float = 0.5, max_per_img: int = 100, min_bbox_size: float = 1e-2,
                 mask_roi_extractor: nn.Module | None = None, mask_head: FCNMaskHead | None = None,
                 mask_thr_binary: float = 0.5):
        super().__init__(bbox_head.num_classes, nms_iou_thr, max_per_img)
        if (mask_roi_extractor is None) != (mask_head is None):
            raise ValueError("a mask branch needs both mask_roi_extractor and mask_head")
        if mask_head is not None and mask_head.num_classes != bbox_head.num_classes:
            raise ValueError(f"mask_head.num_classes ({mask_head.num_classes}) must be bbox_head.num_classes "
                             f"({bbox_head.num_classes})")
        if not 0.0 <= mask_thr_binary <= 1.0:
            raise ValueError(f"mask_thr_binary must be in [0, 1], got {mask_thr_binary}")
        self.bbox_roi_extractor = bbox_roi_extractor
        self.bbox_head = bbox_head
        self.mask_roi_extractor = mask_roi_extractor
        self.mask_head = mask_head
        self.with_mask = mask_head is not None
        self.mask_thr_binary = mask_thr_binary
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

    def sample(self, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> SampledRoIs:
        """Assign one image's ``proposals [P, 4]`` to its ground truth and draw the training RoIs."""
        if self.add_gt_as_proposals:
            proposals = torch.cat([proposals, gt_boxes.to(proposals.dtype)])
        assigned = self.assigner.assign(gt_boxes, proposals)
        pos_mask, neg_mask = self.sampler.sample(assigned)
        sampled = torch.where(pos_mask | neg_mask)[0]  # in proposal order, as torchvision keeps them
        boxes, assigned = proposals[sampled], assigned[sampled]
        positive = assigned >= 0
        labels = torch.full_like(assigned, self.num_classes)  # background: num_classes
        labels[positive] = gt_labels[assigned[positive]]
        return SampledRoIs(boxes, labels, assigned, positive)

    def forward_train(self, feats: list[Tensor], proposals: list[Tensor], img_metas: list[dict],
                      gt_bboxes: list[Tensor], gt_labels: list[Tensor],
                      gt_masks: list[Tensor] | None = None) -> dict[str, Tensor]:
        samples = [self.sample(*image) for image in zip(proposals, gt_bboxes, gt_labels)]
        losses = self.bbox_loss(feats, samples, gt_bboxes)
        if self.with_mask:
            if gt_masks is None:
                raise ValueError("StandardRoIHead with a mask head: forward_train needs gt_masks")
            losses.update(self.mask_loss(feats, samples, gt_masks))
        return losses

    def bbox_loss(self, feats: list[Tensor], samples: list[SampledRoIs],
                  gt_bboxes: list[Tensor]) -> dict[str, Tensor]:
        """The box head's losses over all sampled RoIs."""
        pos_target_deltas = [self.bbox_head.bbox_coder.encode(s.boxes[s.positive], gt[s.assigned_gt[s.positive]])
                             for s, gt in zip(samples, gt_bboxes)]
        cls_score, bbox_pred = self.bbox_head(self.bbox_roi_extractor(feats, self.to_rois([s.boxes for s in samples])))
        return self.bbox_head.loss(cls_score, bbox_pred, torch.cat([s.labels for s in samples]),
                                   torch.cat(pos_target_deltas))

    def mask_loss(self, feats: list[Tensor], samples: list[SampledRoIs], gt_masks: list[Tensor]) -> dict[str, Tensor]:
        """The mask head's ``loss_mask`` over the sampled positive RoIs."""
        pos_boxes = [s.boxes[s.positive] for s in samples]
        targets = [self.mask_head.mask_targets(boxes, s.assigned_gt[s.positive], masks)
                   for boxes, s, masks in zip(pos_boxes, samples, gt_masks)]
        mask_logits = self.mask_head(self.mask_roi_extractor(feats, self.to_rois(pos_boxes)))
        return self.mask_head.loss(mask_logits, torch.cat(targets), torch.cat([s.labels[s.positive] for s in samples]))

    def simple_test(self, feats: list[Tensor], proposals: list[Tensor],
                    img_metas: list[dict]) -> list[dict[str, Tensor]]:
        """Detections per image in its resized frame (``img_shape``), clipped to it (with a mask
        branch, with their ``mask_probs``)."""
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
        if self.with_mask:
            self.add_mask_probs(feats, results)
        return results

    def add_mask_probs(self, feats: list[Tensor], results: list[dict[str, Tensor]]) -> None:
        """Give each image's detections ``"mask_probs" [K, M, M]``: their class's mask over their box."""
        detected = [result["boxes"] for result in results]
        mask_logits = self.mask_head(self.mask_roi_extractor(feats, self.to_rois(detected)))
        mask_probs = self.mask_head.mask_probs(mask_logits, torch.cat([result["labels"] for result in results]))
        for result, probs in zip(results, mask_probs.split([len(boxes) for boxes in detected])):
            result["mask_probs"] = probs
