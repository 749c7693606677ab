"""The contract of a two-stage detector's first stage (``TwoStageDetector.rpn_head``)."""
from __future__ import annotations

import abc

from torch import Tensor, nn


class BaseProposalHead(nn.Module, metaclass=abc.ABCMeta):
    """Class-agnostic proposals from dense predictions: ``RPNHead``.

    ``TwoStageDetector`` passes its proposals to the RoI head (``BaseRoIHead``);
    proposals carry no gradient, the proposal head is trained by its own losses.
    """

    @abc.abstractmethod
    def forward_train(self, feats: list[Tensor], img_metas: list[dict],
                      gt_bboxes: list[Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
        """The losses of a batch and the proposals the RoI head is trained on.

        Args:
            feats: per level ``[B, C, H_l, W_l]``, finest first.
            img_metas: per image, its metas (``img_shape``, ``pad_shape``, ``scale_factor``, …).
            gt_bboxes: per image ``[N_i, 4]`` x1y1x2y2 in the resized image's pixels (``N_i`` may be 0).
        Returns:
            scalar losses by name (each name has ``loss`` in it), and per image proposals
            ``[P_i, 4]`` x1y1x2y2 in its resized frame, best first.
        """

    @abc.abstractmethod
    def simple_test(self, feats: list[Tensor], img_metas: list[dict]) -> list[Tensor]:
        """Per image proposals ``[P_i, 4]`` x1y1x2y2 in its resized frame, best first."""
