"""Region Proposal Network head (Faster R-CNN, arXiv 1506.01497)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from ...registry import MODELS
from ..task_utils import AnchorGenerator, DeltaXYWHBBoxCoder, MaxIoUAssigner, RandomSampler
from .base_proposal_head import BaseProposalHead
from .dense_outputs import flatten_levels


@MODELS.register()
class RPNHead(BaseProposalHead):
    """A shared 3x3 conv + ReLU, then 1x1 convs for objectness and box deltas per anchor.

    Training (torchvision's numerics): anchors are assigned, ``sampler`` draws
    positives and negatives per image; the objectness loss runs over the sampled
    anchors, the box loss over the sampled positives, both divided by the number
    sampled in the batch.

    Proposals (torchvision's order): per level the ``nms_pre`` highest-scoring
    anchors, decoded and clipped; boxes smaller than ``min_bbox_size`` and scores
    below ``score_thr`` dropped; NMS within each level; the ``max_per_img`` best.
    ``*_train`` settings apply while training, ``*_test`` otherwise.

    Args:
        in_channels: channels of every input level.
        anchor_generator / bbox_coder / assigner / sampler / loss_cls / loss_bbox: the parts.
        feat_channels: channels of the shared conv.
    """

    def __init__(self, in_channels: int, anchor_generator: AnchorGenerator, bbox_coder: DeltaXYWHBBoxCoder,
                 assigner: MaxIoUAssigner, sampler: RandomSampler, loss_cls: nn.Module, loss_bbox: nn.Module,
                 feat_channels: int = 256, nms_pre_train: int = 2000, max_per_img_train: int = 2000,
                 nms_pre_test: int = 1000, max_per_img_test: int = 1000, nms_iou_thr: float = 0.7,
                 min_bbox_size: float = 1e-3, score_thr: float = 0.0):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.bbox_coder = bbox_coder
        self.assigner = assigner
        self.sampler = sampler
        self.loss_cls = loss_cls
        self.loss_bbox = loss_bbox
        self.nms_pre_train, self.max_per_img_train = nms_pre_train, max_per_img_train
        self.nms_pre_test, self.max_per_img_test = nms_pre_test, max_per_img_test
        self.nms_iou_thr, self.min_bbox_size, self.score_thr = nms_iou_thr, min_bbox_size, score_thr
        num_anchors = anchor_generator.num_base_anchors
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: objectness logits ``[B, A, H, W]`` and box deltas ``[B, A*4, H, W]``."""
        hidden = [torch.relu(self.rpn_conv(x)) for x in feats]
        return [self.rpn_cls(h) for h in hidden], [self.rpn_reg(h) for h in hidden]

    def priors(self, feats: list[Tensor]) -> list[Tensor]:
        return self.anchor_generator.grid_anchors([x.shape[-2:] for x in feats], feats[0].device)

    def forward_train(self, feats: list[Tensor], img_metas: list[dict],
                      gt_bboxes: list[Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
        """Losses (``loss_rpn_cls``, ``loss_rpn_bbox``) and proposals ``[P_i, 4]`` per image."""
        objectness, deltas = self(feats)
        anchors = self.priors(feats)
        proposals = self.proposals(objectness, deltas, anchors, img_metas, self.nms_pre_train, self.max_per_img_train)
        return self.loss(objectness, deltas, torch.cat(anchors), gt_bboxes), proposals

    def simple_test(self, feats: list[Tensor], img_metas: list[dict]) -> list[Tensor]:
        """Proposals ``[P_i, 4]`` per image (test settings)."""
        objectness, deltas = self(feats)
        return self.proposals(objectness, deltas, self.priors(feats), img_metas,
                              self.nms_pre_test, self.max_per_img_test)

    def loss(self, objectness: list[Tensor], deltas: list[Tensor], anchors: Tensor,
             gt_bboxes: list[Tensor]) -> dict[str, Tensor]:
        logits = flatten_levels(objectness, 1).flatten()  # [B * N]
        flat_deltas = flatten_levels(deltas, 4).reshape(-1, 4)  # [B * N, 4]
        pos_masks, neg_masks, target_deltas = [], [], []
        for boxes in gt_bboxes:
            assigned = self.assigner.assign(boxes, anchors)
            pos_mask, neg_mask = self.sampler.sample(assigned)
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
            target_deltas.append(self.bbox_coder.encode(anchors[pos_mask], boxes[assigned[pos_mask]]))
        positives = torch.where(torch.cat(pos_masks))[0]
        negatives = torch.where(torch.cat(neg_masks))[0]
        sampled = torch.cat([positives, negatives])
        labels = torch.cat([torch.ones_like(positives), torch.zeros_like(negatives)]).to(logits.dtype)
        num_sampled = max(1, sampled.numel())
        return {
            "loss_rpn_cls": self.loss_cls(logits[sampled], labels, avg_factor=num_sampled),
            "loss_rpn_bbox": self.loss_bbox(flat_deltas[positives], torch.cat(target_deltas), avg_factor=num_sampled),
        }

    @torch.no_grad()
    def proposals(self, objectness: list[Tensor], deltas: list[Tensor], anchors: list[Tensor], img_metas: list[dict],
                  nms_pre: int, max_per_img: int) -> list[Tensor]:
        """Proposals ``[P_i, 4] x1y1x2y2`` per image from per-level outputs and anchors."""
        batch = objectness[0].shape[0]
        top_logits, top_deltas, top_anchors, top_levels = [], [], [], []
        for level, (level_logits, level_deltas, level_anchors) in enumerate(zip(objectness, deltas, anchors)):
            level_logits = flatten_levels([level_logits], 1)[..., 0]  # [B, N_l]
            level_logits, indices = level_logits.topk(min(nms_pre, level_logits.shape[1]), dim=1)
            level_deltas = flatten_levels([level_deltas], 4)
            top_logits.append(level_logits)
            top_deltas.append(torch.gather(level_deltas, 1, indices[..., None].expand(-1, -1, 4)))
            top_anchors.append(level_anchors[indices])
            top_levels.append(torch.full_like(indices, level))
        scores = torch.sigmoid(torch.cat(top_logits, dim=1))
        boxes = self.bbox_coder.decode(torch.cat(top_anchors, dim=1).reshape(-1, 4),
                                       torch.cat(top_deltas, dim=1).reshape(-1, 4)).view(batch, -1, 4)
        levels = torch.cat(top_levels, dim=1)
        results = []
        for image_boxes, image_scores, image_levels, meta in zip(boxes, scores, levels, img_metas):
            image_boxes = clip_boxes_to_image(image_boxes, tuple(meta["img_shape"][:2]))
            keep = remove_small_boxes(image_boxes, self.min_bbox_size)
            image_boxes, image_scores, image_levels = image_boxes[keep], image_scores[keep], image_levels[keep]
            keep = torch.where(image_scores >= self.score_thr)[0]
            image_boxes, image_scores, image_levels = image_boxes[keep], image_scores[keep], image_levels[keep]
            keep = batched_nms(image_boxes, image_scores, image_levels, self.nms_iou_thr)[:max_per_img]
            results.append(image_boxes[keep])
        return results
