"""Backbones (stages, freezing, norm_eval) and necks (FPN extra levels, PAFPN's bottom-up path)."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from raydet.models.backbones import ResNet, TinyConvNet
from raydet.models.necks import FPN, PAFPN

pytestmark = pytest.mark.timeout(60)


def test_resnet_returns_the_requested_stages():
    backbone = ResNet(depth=18, out_indices=(1, 3)).eval()
    outs = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 8, 12), (1, 512, 2, 3)]
    assert backbone.out_channels == [128, 512]
    shallow = ResNet(depth=18, out_indices=(0, 1))
    assert not hasattr(shallow, "layer3")  # no unused parameters (DDP would reject them)
    assert ResNet(depth=50).out_channels == [256, 512, 1024, 2048]
    with pytest.raises(ValueError, match="out_indices"):
        ResNet(depth=18, out_indices=(4,))


def test_resnet_frozen_stages_and_norm_eval():
    backbone = ResNet(depth=18, frozen_stages=1, norm_eval=False).train()
    frozen = {name.split(".")[0] for name, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}
    assert not backbone.bn1.training and not backbone.layer1[0].bn1.training
    assert backbone.layer2[0].bn1.training
    backbone = ResNet(depth=18, norm_eval=True).train()
    assert backbone.training and not any(m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen_bn = ResNet(depth=18, norm="FrozenBN", norm_eps=0.0)
    assert isinstance(frozen_bn.bn1, FrozenBatchNorm2d) and frozen_bn.bn1.eps == 0.0


def test_tiny_convnet_strides_match_resnet():
    backbone = TinyConvNet(channels=(8, 16, 32, 64), out_indices=(0, 1, 2, 3))
    outs = backbone(torch.randn(2, 3, 128, 160))
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 32, 40), (16, 16, 20), (32, 8, 10), (64, 4, 5)]
    assert backbone.out_channels == [8, 16, 32, 64]


def pyramid_inputs(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, c, 64 // 2 ** i, 80 // 2 ** i, generator=generator) for i, c in enumerate((8, 16, 32))]


@pytest.mark.parametrize("extra", [False, "on_input", "on_lateral", "on_output"])
@pytest.mark.parametrize("neck_class", [FPN, PAFPN])
def test_necks_make_the_extra_levels(neck_class, extra):
    neck = neck_class([8, 16, 32], 24, num_outs=5, add_extra_convs=extra, relu_before_extra_convs=True)
    outs = neck(pyramid_inputs())
    assert [tuple(o.shape[1:]) for o in outs] == [(24, 64, 80), (24, 32, 40), (24, 16, 20), (24, 8, 10), (24, 4, 5)]
    assert len(neck.fpn_convs) == (5 if extra else 3)


def test_fpn_start_level_skips_the_finest_input():
    neck = FPN([8, 16, 32], 24, num_outs=3, start_level=1, add_extra_convs="on_input")
    outs = neck(pyramid_inputs())
    assert [tuple(o.shape[2:]) for o in outs] == [(32, 40), (16, 20), (8, 10)]


def test_pafpn_bottom_up_path_carries_fine_detail_to_coarse_levels():
    """In an FPN the coarsest output ignores the finest input; PANet's bottom-up path connects them."""
    for neck_class, connected in ((FPN, False), (PAFPN, True)):
        torch.manual_seed(0)
        neck = neck_class([8, 16, 32], 24, num_outs=3).eval()
        inputs = pyramid_inputs()
        changed = [inputs[0] + 1.0, *inputs[1:]]
        with torch.no_grad():
            coarsest, coarsest_changed = neck(inputs)[-1], neck(changed)[-1]
        assert (not torch.equal(coarsest, coarsest_changed)) == connected, neck_class.__name__


def test_necks_reject_a_wrong_number_of_inputs():
    with pytest.raises(ValueError, match="expects 3 inputs, got 2"):
        PAFPN([8, 16, 32], 24, num_outs=3)(pyramid_inputs()[:2])
