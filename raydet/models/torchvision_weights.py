"""torchvision detection checkpoints -> raydet detectors.

``convert_torchvision_state_dict`` renames the parameters of torchvision's
``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``, ``retinanet_resnet50_fpn`` and
``fcos_resnet50_fpn`` (both the old and the current key layouts) to the matching raydet
detector built from ``configs/_base_/models/*_r50_fpn.yaml``, and re-orders the class
outputs: torchvision's classes are the rows ``class_indices`` (background first in Faster
and Mask R-CNN), raydet's are ``0 .. num_classes - 1`` (background last in the box
classifier, absent from the mask logits).

``load_torchvision_detector`` does the whole job for a built detector; a config
asks for it with ``model.init_cfg: {type: Pretrained, checkpoint:
torchvision://fasterrcnn_resnet50_fpn}`` (or a local copy of that file).
"""
from __future__ import annotations

import logging
import re
from typing import Literal, Mapping

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

logger = logging.getLogger(__name__)

Arch = Literal["fasterrcnn", "maskrcnn", "retinanet", "fcos"]
# the architectures whose classifier has a background output (torchvision: the first)
_WITH_BACKGROUND = ("fasterrcnn", "maskrcnn")

# COCO: torchvision's 91 outputs are indexed by category id (0: background, 10 unused "N/A" ids);
# raydet numbers the 80 categories 0..79 in category-id order.
COCO_CATEGORY_IDS = [index for index, name in enumerate(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
                     if name not in ("__background__", "N/A")]

# (pattern, replacement) on torchvision keys; a replacement may be a function of the match.
_COMMON_RULES: list[tuple[str, object]] = [
    (r"backbone\.body\.(.+)", r"backbone.\1"),
    (r"backbone\.fpn\.inner_blocks\.(\d+)(?:\.0)?\.(weight|bias)", r"neck.lateral_convs.\1.\2"),
    (r"backbone\.fpn\.layer_blocks\.(\d+)(?:\.0)?\.(weight|bias)", r"neck.fpn_convs.\1.\2"),
]
_FASTER_RCNN_RULES: list[tuple[str, object]] = [
    (r"rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)", r"rpn_head.rpn_conv.\1"),
    (r"rpn\.head\.cls_logits\.(weight|bias)", r"rpn_head.rpn_cls.\1"),
    (r"rpn\.head\.bbox_pred\.(weight|bias)", r"rpn_head.rpn_reg.\1"),
    (r"roi_heads\.box_head\.fc6\.(weight|bias)", r"roi_head.bbox_head.shared_fcs.0.\1"),
    (r"roi_heads\.box_head\.fc7\.(weight|bias)", r"roi_head.bbox_head.shared_fcs.1.\1"),
    (r"roi_heads\.box_predictor\.cls_score\.(weight|bias)", r"roi_head.bbox_head.fc_cls.\1"),
    (r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)", r"roi_head.bbox_head.fc_reg.\1"),
]
_RULES: dict[str, list[tuple[str, object]]] = {
    "fasterrcnn": _FASTER_RCNN_RULES,
    "maskrcnn": [
        *_FASTER_RCNN_RULES,
        # conv i: mask_head.<i>.0.*, before torchvision 0.13 (and in its COCO checkpoint) mask_head.mask_fcn<i+1>.*
        (r"roi_heads\.mask_head\.(?:(\d+)\.0|mask_fcn(\d+))\.(weight|bias)",
         lambda m: f"roi_head.mask_head.convs.{m[1] if m[1] is not None else int(m[2]) - 1}.conv.{m[3]}"),
        (r"roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)", r"roi_head.mask_head.upsample.\1"),
        (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)", r"roi_head.mask_head.conv_logits.\1"),
    ],
    "retinanet": [
        # current layout: conv.<i>.0.*; before torchvision 0.13: conv.<2i>.* (conv, relu, conv, …)
        (r"head\.classification_head\.conv\.(\d+)\.0\.(weight|bias)", r"bbox_head.cls_convs.\1.conv.\2"),
        (r"head\.classification_head\.conv\.(\d+)\.(weight|bias)",
         lambda m: f"bbox_head.cls_convs.{int(m[1]) // 2}.conv.{m[2]}"),
        (r"head\.classification_head\.cls_logits\.(weight|bias)", r"bbox_head.retina_cls.\1"),
        (r"head\.regression_head\.conv\.(\d+)\.0\.(weight|bias)", r"bbox_head.reg_convs.\1.conv.\2"),
        (r"head\.regression_head\.conv\.(\d+)\.(weight|bias)",
         lambda m: f"bbox_head.reg_convs.{int(m[1]) // 2}.conv.{m[2]}"),
        (r"head\.regression_head\.bbox_reg\.(weight|bias)", r"bbox_head.retina_reg.\1"),
    ],
    "fcos": [
        # conv.<3i> is the conv, conv.<3i+1> its GroupNorm
        (r"head\.(classification|regression)_head\.conv\.(\d+)\.(weight|bias)",
         lambda m: f"bbox_head.{'cls' if m[1] == 'classification' else 'reg'}_convs.{int(m[2]) // 3}."
                   f"{('conv', 'norm')[int(m[2]) % 3]}.{m[3]}"),
        (r"head\.classification_head\.cls_logits\.(weight|bias)", r"bbox_head.conv_cls.\1"),
        (r"head\.regression_head\.bbox_reg\.(weight|bias)", r"bbox_head.conv_reg.\1"),
        (r"head\.regression_head\.bbox_ctrness\.(weight|bias)", r"bbox_head.conv_centerness.\1"),
    ],
}
# raydet parameters whose rows are per class
_CLASS_PARAMS = {
    "fasterrcnn": ("roi_head.bbox_head.fc_cls.", "roi_head.bbox_head.fc_reg."),
    "maskrcnn": ("roi_head.bbox_head.fc_cls.", "roi_head.bbox_head.fc_reg.", "roi_head.mask_head.conv_logits."),
    "retinanet": ("bbox_head.retina_cls.",),
    "fcos": ("bbox_head.conv_cls.",),
}


def is_torchvision_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether the keys are those of a torchvision detector (``backbone.body.*``)."""
    return any(key.startswith("backbone.body.") for key in state_dict)


def torchvision_num_classes(state_dict: Mapping[str, Tensor], arch: Arch) -> int:
    """Number of class outputs of a torchvision checkpoint (Faster / Mask R-CNN: background included)."""
    if arch in _WITH_BACKGROUND:
        return state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]
    num_anchors = state_dict["head.regression_head.bbox_reg.weight"].shape[0] // 4
    return state_dict["head.classification_head.cls_logits.weight"].shape[0] // num_anchors


def _rename(key: str, arch: Arch, num_fpn_inputs: int) -> str:
    extra = re.fullmatch(r"backbone\.fpn\.extra_blocks\.p([67])\.(weight|bias)", key)
    if extra:  # P6, P7 follow the per-input convs in FPN.fpn_convs
        return f"neck.fpn_convs.{num_fpn_inputs + int(extra[1]) - 6}.{extra[2]}"
    for pattern, replacement in _COMMON_RULES + _RULES[arch]:
        match = re.fullmatch(pattern, key)
        if match:
            return replacement(match) if callable(replacement) else match.expand(replacement)
    raise KeyError(f"no raydet parameter for torchvision's {key!r} ({arch})")


def _select_classes(key: str, value: Tensor, arch: Arch, class_indices: list[int], num_outputs: int) -> Tensor:
    """Rows of a per-class parameter for ``class_indices`` (+ background for Faster / Mask R-CNN's classifier)."""
    if ".fc_cls." in key:
        return value[class_indices + [0]]  # background moves from first to last
    if ".conv_logits." in key:  # Mask R-CNN's mask logits: one channel per class, background dropped
        return value[class_indices]
    if ".fc_reg." in key:  # 4 rows per class
        rows = [4 * c + k for c in class_indices for k in range(4)]
        return value[rows]
    num_anchors = value.shape[0] // num_outputs  # RetinaNet: rows are anchor-major (a * K + class)
    rows = [a * num_outputs + c for a in range(num_anchors) for c in class_indices]
    return value[rows]


def convert_torchvision_state_dict(state_dict: Mapping[str, Tensor], arch: Arch,
                                   class_indices: list[int] | None = None,
                                   drop_class_params: bool = False) -> dict[str, Tensor]:
    """torchvision ``arch`` checkpoint -> the state dict of the matching raydet detector.

    Args:
        class_indices: torchvision's class outputs that become raydet classes 0, 1, …
            (``COCO_CATEGORY_IDS`` for COCO's 80 classes); by default all of them
            (all but Faster / Mask R-CNN's background).
        drop_class_params: leave out the per-class parameters (to fine-tune on other
            classes: those layers keep their fresh initialisation).
    """
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("_metadata")}
    num_outputs = torchvision_num_classes(state_dict, arch)
    if class_indices is None:
        class_indices = list(range(1, num_outputs)) if arch in _WITH_BACKGROUND else list(range(num_outputs))
    if any(not 0 <= c < num_outputs for c in class_indices) or (arch in _WITH_BACKGROUND and 0 in class_indices):
        raise ValueError(f"class_indices must be torchvision class outputs (1..{num_outputs - 1} for Faster / "
                         f"Mask R-CNN, 0..{num_outputs - 1} otherwise), got {class_indices}")
    num_fpn_inputs = len({k.split(".")[3] for k in state_dict if k.startswith("backbone.fpn.inner_blocks.")})
    converted = {}
    for key, value in state_dict.items():
        new_key = _rename(key, arch, num_fpn_inputs)
        if new_key.startswith(_CLASS_PARAMS[arch]):
            if drop_class_params:
                continue
            value = _select_classes(new_key, value, arch, class_indices, num_outputs)
        converted[new_key] = value
    return converted


def load_torchvision_detector(detector: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Load a torchvision checkpoint into ``detector`` (a ``FasterRCNN``, ``MaskRCNN``, ``RetinaNet`` or ``FCOS``).

    Classes: when the checkpoint has as many classes as the detector they map one to
    one; torchvision's 91 COCO outputs map onto 80 classes by ``COCO_CATEGORY_IDS``;
    otherwise the per-class layers are not loaded (fine-tuning on new classes).
    Returns the raydet parameters left as initialised.
    """
    arch = getattr(detector, "torchvision_arch", None)
    if arch is None:
        raise TypeError(f"{type(detector).__name__} has no torchvision counterpart to convert weights from")
    num_outputs = torchvision_num_classes(state_dict, arch)
    num_tv_classes = num_outputs - 1 if arch in _WITH_BACKGROUND else num_outputs
    num_classes = detector.final_head.num_classes
    class_indices, drop = None, False
    if num_classes == len(COCO_CATEGORY_IDS) and num_outputs == 91:
        class_indices = COCO_CATEGORY_IDS
    elif num_classes != num_tv_classes:
        drop = True
        logger.warning("checkpoint has %d classes, the model %d: the class-specific layers keep their "
                       "initialisation", num_tv_classes, num_classes)
    converted = convert_torchvision_state_dict(state_dict, arch, class_indices, drop_class_params=drop)
    missing, unexpected = detector.load_state_dict(converted, strict=False)
    allowed_missing = _CLASS_PARAMS[arch] if drop else ()
    bad_missing = [k for k in missing if not k.startswith(allowed_missing) and not k.endswith("num_batches_tracked")]
    if bad_missing or unexpected:
        raise RuntimeError(f"torchvision {arch} weights do not fit {type(detector).__name__}: "
                           f"missing {bad_missing}, unexpected {unexpected}")
    return list(missing)


__all__ = ["COCO_CATEGORY_IDS", "convert_torchvision_state_dict", "is_torchvision_state_dict",
           "load_torchvision_detector", "torchvision_num_classes"]
