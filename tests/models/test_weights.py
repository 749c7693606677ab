"""Pretrained weights: init_cfg from a local file, torchvision:// names, torchvision detector conversion."""
from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from raydet.builder import build_model
from raydet.config import load_config
from raydet.models import Pretrained
from raydet.models.backbones import ResNet
from raydet.models.torchvision_weights import (
    COCO_CATEGORY_IDS,
    convert_torchvision_state_dict,
    load_torchvision_detector,
)
from tests.helpers import REPO

pytestmark = pytest.mark.timeout(60)


def test_resnet_init_cfg_loads_a_local_torchvision_checkpoint(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    for norm in ("BN", "FrozenBN"):
        backbone = ResNet(depth=18, norm=norm, init_cfg=Pretrained(str(tmp_path / "r18.pth")))
        assert not torch.equal(backbone.conv1.weight, reference.conv1.weight)
        backbone.init_weights()
        assert torch.equal(backbone.conv1.weight, reference.conv1.weight)
        assert torch.equal(backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    shallow = ResNet(depth=18, out_indices=(0, 1, 2), init_cfg=Pretrained(str(tmp_path / "r18.pth")))
    shallow.init_weights()  # layer4's weights in the file are not needed
    assert torch.equal(shallow.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)


def test_pretrained_handles_wrappers_and_prefixes(tmp_path):
    weights = {"backbone.conv.weight": torch.ones(2), "neck.conv.weight": torch.zeros(2)}
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "ckpt.pth")
    assert Pretrained(str(tmp_path / "ckpt.pth"), prefix="backbone.").load_state_dict().keys() == {"conv.weight"}
    with pytest.raises(KeyError, match="no keys under the prefix 'head.'"):
        Pretrained(str(tmp_path / "ckpt.pth"), prefix="head.").load_state_dict()
    with pytest.raises(FileNotFoundError):
        Pretrained(str(tmp_path / "missing.pth")).load_state_dict()


def test_torchvision_names_resolve_to_published_urls_without_downloading():
    assert Pretrained("torchvision://resnet50").url() == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert Pretrained("torchvision://resnet50.IMAGENET1K_V2").url() == \
        torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    assert Pretrained("torchvision://retinanet_resnet50_fpn").url() == \
        torchvision.models.detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1.url
    assert Pretrained("/some/file.pth").url() is None
    with pytest.raises(ValueError, match="torchvision has no model 'resnet5'"):
        Pretrained("torchvision://resnet5").url()


def small_torchvision_retinanet(num_classes: int) -> torch.nn.Module:
    """torchvision's RetinaNet on a ResNet-18 (same key layout as retinanet_resnet50_fpn, quicker)."""
    torch.manual_seed(0)
    body = torchvision.models.resnet18(norm_layer=torchvision.ops.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return torchvision.models.detection.RetinaNet(backbone, num_classes)


def raydet_retinanet_r18(num_classes: int, *overrides: str) -> torch.nn.Module:
    return build_model(load_config(REPO / "configs/_base_/models/retinanet_r50_fpn.yaml", [
        "model.backbone.depth=18", "model.backbone.init_cfg=null", "model.neck.in_channels=[128, 256, 512]",
        f"model.bbox_head.num_classes={num_classes}", *overrides]))


def test_coco_91_outputs_map_to_80_classes():
    reference = small_torchvision_retinanet(91)
    model = raydet_retinanet_r18(80)
    assert load_torchvision_detector(model, reference.state_dict()) == []
    theirs = reference.head.classification_head.cls_logits.weight
    ours = model.bbox_head.retina_cls.weight
    for anchor, raydet_class in [(0, 0), (4, 11), (8, 79)]:
        assert torch.equal(ours[anchor * 80 + raydet_class], theirs[anchor * 91 + COCO_CATEGORY_IDS[raydet_class]])
    assert COCO_CATEGORY_IDS[11] == 13  # category 12 is one of COCO's unused ids
    assert torch.equal(model.neck.fpn_convs[4].weight, reference.backbone.fpn.extra_blocks.p7.weight)


def test_other_classes_keep_fresh_class_layers(tmp_path):
    reference = small_torchvision_retinanet(91)
    torch.save(reference.state_dict(), tmp_path / "retinanet_coco.pth")
    checkpoint = tmp_path / "retinanet_coco.pth"
    model = raydet_retinanet_r18(3, f"model.init_cfg={{type: Pretrained, checkpoint: {checkpoint}}}")
    fresh_logits = model.bbox_head.retina_cls.weight.detach().clone()
    model.init_weights()
    assert torch.equal(model.bbox_head.retina_cls.weight, fresh_logits)
    assert torch.equal(model.bbox_head.retina_reg.weight, reference.head.regression_head.bbox_reg.weight)
    assert torch.equal(model.backbone.layer3[0].conv1.weight, reference.backbone.body.layer3[0].conv1.weight)


def old_layout(state_dict: dict) -> dict:
    """Keys as torchvision wrote them before 0.13 (the layout of its older COCO checkpoints)."""
    renamed = {}
    for key, value in state_dict.items():
        key = re.sub(r"head\.(\w+)_head\.conv\.(\d+)\.0\.", lambda m: f"head.{m[1]}_head.conv.{2 * int(m[2])}.", key)
        renamed[re.sub(r"fpn\.(inner|layer)_blocks\.(\d+)\.0\.", r"fpn.\1_blocks.\2.", key)] = value
    return renamed


def test_old_and_new_torchvision_layouts_convert_alike():
    state = small_torchvision_retinanet(4).state_dict()
    old = old_layout(state)
    assert "head.classification_head.conv.6.weight" in old and "backbone.fpn.inner_blocks.2.weight" in old
    new_converted = convert_torchvision_state_dict(state, "retinanet")
    old_converted = convert_torchvision_state_dict(old, "retinanet")
    assert new_converted.keys() == old_converted.keys() == raydet_retinanet_r18(4).state_dict().keys()
    assert all(torch.equal(new_converted[k], old_converted[k]) for k in new_converted)
    with pytest.raises(KeyError, match="no raydet parameter for torchvision's 'roi_heads.mask_head.0.weight'"):
        convert_torchvision_state_dict({**state, "roi_heads.mask_head.0.weight": torch.zeros(1)}, "retinanet")


def test_faster_rcnn_background_moves_last_and_old_rpn_keys_convert():
    cls_score = torch.arange(3.0)[:, None].expand(3, 2)  # rows: background, class 1, class 2
    bbox_pred = torch.arange(12.0)[:, None].expand(12, 2)
    converted = convert_torchvision_state_dict({
        "rpn.head.conv.weight": torch.ones(1),  # before torchvision 0.13
        "roi_heads.box_predictor.cls_score.weight": cls_score,
        "roi_heads.box_predictor.bbox_pred.weight": bbox_pred,
    }, "fasterrcnn")
    assert torch.equal(converted["rpn_head.rpn_conv.weight"], torch.ones(1))
    assert converted["roi_head.bbox_head.fc_cls.weight"][:, 0].tolist() == [1.0, 2.0, 0.0]
    assert converted["roi_head.bbox_head.fc_reg.weight"][:, 0].tolist() == list(map(float, range(4, 12)))


def test_relative_pretrained_paths_are_resolved_where_the_command_starts(tmp_path, monkeypatch):
    """Ray workers run elsewhere: the driver makes ``Pretrained`` local paths absolute; URIs stay as written."""
    from raydet.config import Config
    from raydet.config.parsed import parse_config

    monkeypatch.chdir(tmp_path)
    config = Config({"model": {"type": "RetinaNet", "init_cfg": {"type": "Pretrained", "checkpoint": "w/det.pth"},
                               "backbone": {"init_cfg": {"type": "Pretrained", "checkpoint": "torchvision://resnet50"}},
                               "neck": {"init_cfg": {"type": "Pretrained", "checkpoint": "s3://bucket/neck.pth"}}}})
    model = parse_config(config).config["model"]
    assert model["init_cfg"]["checkpoint"] == str(tmp_path / "w/det.pth")
    assert model["backbone"]["init_cfg"]["checkpoint"] == "torchvision://resnet50"
    assert model["neck"]["init_cfg"]["checkpoint"] == "s3://bucket/neck.pth"
