"""``apply_accel``: a model built from a config has none of the speed paths (even where the config's ``accel:``
turns them on: the engine applies them); each setting changes what it should and nothing else, and keeps
the state_dict."""
from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from raydet.accel import AccelSettings, apply_accel
from raydet.builder import build_model
from raydet.config import load_config
from tests.torchvision_reference import REPO

pytestmark = pytest.mark.timeout(120)

R50 = "model.backbone.init_cfg=null"  # no download
CONFIGS = {  # name: (config, overrides)
    "retinanet": ["configs/_base_/models/retinanet_r50_fpn.yaml", "model.bbox_head.num_classes=5", R50],
    "fcos": ["configs/_base_/models/fcos_r50_fpn.yaml", "model.bbox_head.num_classes=5", R50],
    "fasterrcnn": ["configs/_base_/models/faster_rcnn_r50_fpn.yaml", "model.roi_head.bbox_head.num_classes=5", R50],
    "maskrcnn": ["configs/_base_/models/mask_rcnn_r50_fpn.yaml", "model.roi_head.bbox_head.num_classes=5",
                 "model.roi_head.mask_head.num_classes=5", R50],
    "fcos_tiny": ["configs/_base_/models/fcos_tiny.yaml", "model.bbox_head.num_classes=5"],
}
# Mask R-CNN R50-FPN: ResNet-50's conv + norm pairs (stem, 3 per bottleneck, 4 downsample branches); its 3x3
# stride-1 convs (the bottlenecks' conv2 but the 3 of stride 2) and the others (4 FPN outputs, the RPN conv,
# 4 mask-head convs); 2 RoI extractors
RESNET50_PAIRS, RESNET50_3X3, OTHER_3X3, EXTRACTORS = 1 + 16 * 3 + 4, 16 - 3, 4 + 1 + 4, 2


def build(name: str) -> nn.Module:
    path, *overrides = CONFIGS[name]
    torch.manual_seed(0)
    return build_model(load_config(REPO / path, overrides))


def speed_paths(model: nn.Module) -> collections.Counter:
    """How many modules of each ``raydet.accel`` class ``model`` holds, and its backbone's forward pre-hooks."""
    found = collections.Counter(type(module).__name__ for module in model.modules()
                                if type(module).__module__.startswith("raydet.accel"))
    hooks = len(getattr(model, "backbone", nn.Module())._forward_pre_hooks)
    return found + collections.Counter({"backbone input hooks": hooks})


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_model_built_from_a_config_has_no_speed_path(name):
    model = build(name)
    assert not speed_paths(model)
    assert load_config(REPO / CONFIGS[name][0]).get("accel")  # though the config turns them on


@pytest.mark.parametrize(("settings", "expected"), [
    (AccelSettings(), {}),
    (AccelSettings(fold_norm=True),
     {"NormFoldingConv2d": RESNET50_PAIRS, "FoldedAwayFrozenBatchNorm2d": RESNET50_PAIRS}),
    (AccelSettings(winograd=4), {"WinogradConv2d": RESNET50_3X3 + OTHER_3X3}),
    (AccelSettings(winograd=2), {"WinogradConv2d": RESNET50_3X3 + OTHER_3X3}),
    (AccelSettings(gather_roi_align=True), {"GatherRoIExtractor": EXTRACTORS}),
    (AccelSettings(channels_last=True), {"backbone input hooks": 1}),
    (AccelSettings(winograd=4, fold_norm=True, gather_roi_align=True, channels_last=True), {
        "NormFoldingConv2d": RESNET50_PAIRS - RESNET50_3X3, "WinogradNormFoldingConv2d": RESNET50_3X3,
        "FoldedAwayFrozenBatchNorm2d": RESNET50_PAIRS, "WinogradConv2d": OTHER_3X3,
        "GatherRoIExtractor": EXTRACTORS, "backbone input hooks": 1}),
])
def test_each_setting_changes_what_it_should_and_keeps_the_state_dict(settings, expected):
    model = build("maskrcnn")
    state = {key: tensor.data_ptr() for key, tensor in model.state_dict().items()}
    assert apply_accel(model, settings) is model
    assert speed_paths(model) == collections.Counter(expected)
    assert {key: tensor.data_ptr() for key, tensor in model.state_dict().items()} == state
    tile = {module.largest_tile for module in model.modules() if hasattr(module, "largest_tile")}
    assert tile == ({settings.winograd} if settings.winograd else set())


def test_speed_paths_leave_alone_what_a_model_lacks():
    """The tiny FCOS: no ResNet to fold, no RoI extractor; its 3x3 stride-1 convolutions take Winograd."""
    model = build("fcos_tiny")
    apply_accel(model, AccelSettings(winograd=4, fold_norm=True, gather_roi_align=True, channels_last=True))
    assert set(speed_paths(model)) == {"WinogradConv2d", "backbone input hooks"}
