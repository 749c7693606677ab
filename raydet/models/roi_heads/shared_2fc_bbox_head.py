"""Box head of Faster R-CNN with FPN: two shared fully-connected layers, then class and box outputs."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...registry import MODELS
from ..task_utils import DeltaXYWHBBoxCoder


@MODELS.register()
class Shared2FCBBoxHead(nn.Module):
    """Flatten ``[R, C, S, S]`` RoI features -> fc + ReLU -> fc + ReLU -> class logits and deltas.

    Class logits are ``[R, num_classes + 1]`` with the background *last*
    (mmdetection's convention; torchvision puts it first, the weight converter
    moves it).  Box deltas are ``[R, 4 * num_classes]`` (``[R, 4]`` with
    ``reg_class_agnostic``).

    Losses (torchvision's numerics): ``loss_cls`` over all sampled RoIs,
    ``loss_bbox`` over the positives' deltas of their class, both divided by the
    number of sampled RoIs.
    """

    def __init__(self, num_classes: int, bbox_coder: DeltaXYWHBBoxCoder, loss_cls: nn.Module, loss_bbox: nn.Module,
                 in_channels: int = 256, roi_feat_size: int = 7, fc_out_channels: int = 1024,
                 reg_class_agnostic: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.bbox_coder = bbox_coder
        self.loss_cls = loss_cls
        self.loss_bbox = loss_bbox
        self.reg_class_agnostic = reg_class_agnostic
        self.shared_fcs = nn.ModuleList([nn.Linear(in_channels * roi_feat_size ** 2, fc_out_channels),
                                         nn.Linear(fc_out_channels, fc_out_channels)])
        self.fc_cls = nn.Linear(fc_out_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 if reg_class_agnostic else 4 * num_classes)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        """``[R, C, S, S]`` -> class logits ``[R, K + 1]``, deltas ``[R, 4K]`` (or ``[R, 4]``)."""
        x = roi_feats.flatten(1)
        for fc in self.shared_fcs:
            x = torch.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, labels: Tensor,
             pos_target_deltas: Tensor) -> dict[str, Tensor]:
        """``labels [R]`` (``num_classes`` = background); ``pos_target_deltas [P, 4]`` for the
        RoIs with ``labels < num_classes``, in order."""
        num_sampled = max(1, labels.numel())
        positives = torch.where(labels < self.num_classes)[0]
        deltas = bbox_pred.view(bbox_pred.shape[0], -1, 4)
        pos_deltas = deltas[positives, 0 if self.reg_class_agnostic else labels[positives]]
        correct = (cls_score.detach().argmax(dim=1) == labels).sum()
        return {
            "loss_cls": self.loss_cls(cls_score, labels, avg_factor=num_sampled),
            "loss_bbox": self.loss_bbox(pos_deltas, pos_target_deltas, avg_factor=num_sampled),
            "acc": correct * 100.0 / num_sampled,  # classification accuracy of the sampled RoIs, in %
        }

    def decode(self, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor) -> tuple[Tensor, Tensor]:
        """Boxes ``[R, K, 4]`` and class probabilities ``[R, K]`` (background dropped) for ``rois [R, 4]``."""
        boxes = self.bbox_coder.decode(rois, bbox_pred).view(rois.shape[0], -1, 4)
        if self.reg_class_agnostic:
            boxes = boxes.expand(-1, self.num_classes, 4)
        scores = torch.softmax(cls_score, dim=-1)[:, :self.num_classes]
        return boxes, scores
