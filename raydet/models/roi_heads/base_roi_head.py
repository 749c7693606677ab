"""The contract of a two-stage detector's second stage (``TwoStageDetector.roi_head``)."""
from __future__ import annotations

import abc

from torch import Tensor

from ..detection_head import DetectionHead


class BaseRoIHead(DetectionHead):
    """Classifies and refines proposals with features pooled for each: ``StandardRoIHead``.

    ``TwoStageDetector`` calls it with the neck's feature maps and the proposal head's
    proposals.  Subclasses call ``super().__init__(num_classes, nms_iou_thr, max_per_img)``
    (see ``DetectionHead``).
    """

    @abc.abstractmethod
    def forward_train(self, feats: list[Tensor], proposals: list[Tensor], img_metas: list[dict],
                      gt_bboxes: list[Tensor], gt_labels: list[Tensor],
                      gt_masks: list[Tensor] | None = None) -> dict[str, Tensor]:
        """The losses of a batch.

        Args:
            feats: per level ``[B, C, H_l, W_l]``, finest first.
            proposals: per image ``[P_i, 4]`` x1y1x2y2 in its resized frame.
            img_metas: per image, its metas (``img_shape``, ``pad_shape``, ``scale_factor``, …).
            gt_bboxes: per image ``[N_i, 4]`` x1y1x2y2 in the resized image's pixels (``N_i`` may be 0).
            gt_labels: per image ``[N_i]`` int64 in ``[0, num_classes)``.
            gt_masks: with ``with_mask`` (and only then), per image ``[N_i, H_i, W_i]`` uint8 instance
                masks in the pixels of ``gt_bboxes``.
        Returns:
            scalar tensors by name; those whose name has ``loss`` in it are summed into the objective.
        """

    @abc.abstractmethod
    def simple_test(self, feats: list[Tensor], proposals: list[Tensor],
                    img_metas: list[dict]) -> list[dict[str, Tensor]]:
        """Detections per image, in its resized frame (``img_shape``) and clipped to it.

        Args:
            feats: per level ``[B, C, H_l, W_l]``, finest first.
            proposals: per image ``[P_i, 4]`` x1y1x2y2 in its resized frame.
            img_metas: per image, its metas.
        Returns:
            per image ``{"boxes": [K, 4] x1y1x2y2, "scores": [K], "labels": [K] int64}``, ``K <= max_per_img``;
            with ``with_mask`` also ``"mask_probs": [K, M, M]`` (see ``DetectionHead``).
        """
