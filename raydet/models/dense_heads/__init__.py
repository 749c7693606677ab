"""Dense heads: predictions at every feature-map cell (anchors or points).

``BaseDenseHead`` is the contract of a single-stage detector's head, ``BaseProposalHead`` of a
two-stage detector's first stage.
"""
from .base_dense_head import BaseDenseHead
from .base_proposal_head import BaseProposalHead
from .fcos_head import FCOSHead
from .retina_head import RetinaHead
from .rpn_head import RPNHead

__all__ = ["BaseDenseHead", "BaseProposalHead", "FCOSHead", "RetinaHead", "RPNHead"]
