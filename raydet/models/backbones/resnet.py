"""ResNet-18/34/50/101 feature extractor, built from torchvision's ResNet."""
from __future__ import annotations

from functools import partial
from typing import Literal

import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from ...registry import MODELS
from ..pretrained import Pretrained

STAGE_CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512],
                  50: [256, 512, 1024, 2048], 101: [256, 512, 1024, 2048]}


@MODELS.register()
class ResNet(nn.Module):
    """The four residual stages of torchvision's ResNet; returns the maps of ``out_indices``.

    Stage ``i`` (``layer{i+1}``) has stride ``4 * 2**i``.  Parameter names are
    torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` …), so its ImageNet
    checkpoints load as they are (``init_cfg: {type: Pretrained, checkpoint:
    torchvision://resnet50}``).

    Args:
        depth: 18, 34, 50 or 101.
        out_indices: the stages whose outputs ``forward`` returns, in order.
        frozen_stages: freeze (no gradient, eval mode) the stem (0) and the stages
            up to this one (1 = stem + ``layer1``, torchvision's default of 3
            trainable layers); -1 freezes nothing.
        norm: ``BN`` (``nn.BatchNorm2d``) or ``FrozenBN`` (torchvision's
            ``FrozenBatchNorm2d``: fixed statistics and affine, what torchvision's
            detectors use over a pretrained backbone).
        norm_eps: the norm layers' epsilon (torchvision's COCO_V1 Faster R-CNN and
            RetinaNet weights were trained with 0.0).
        norm_eval: keep BatchNorm statistics fixed while training.
        init_cfg: pretrained weights, loaded by ``init_weights()``.
    """

    def __init__(self, depth: Literal[18, 34, 50, 101], out_indices: tuple[int, ...] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm: Literal["BN", "FrozenBN"] = "BN", norm_eps: float = 1e-5,
                 norm_eval: bool = True, init_cfg: Pretrained | None = None):
        super().__init__()
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f"out_indices must be stage numbers in 0..3, got {list(out_indices)}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        norm_layer = partial(FrozenBatchNorm2d if norm == "FrozenBN" else nn.BatchNorm2d, eps=norm_eps)
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=norm_layer)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.num_stages = max(out_indices) + 1  # stages after the last output are not built
        for index in range(self.num_stages):
            setattr(self, f"layer{index + 1}", getattr(net, f"layer{index + 1}"))
        self.out_indices = tuple(out_indices)
        self.out_channels = [STAGE_CHANNELS[depth][i] for i in self.out_indices]
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.init_cfg = init_cfg
        for module in self._frozen_modules():
            module.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        stem = [self.conv1, self.bn1] if self.frozen_stages >= 0 else []
        return stem + [getattr(self, f"layer{i}") for i in range(1, min(self.frozen_stages, self.num_stages) + 1)]

    def init_weights(self) -> None:
        """Load ``init_cfg``'s weights (its classifier ``fc.*`` and the stages not built are left out)."""
        if self.init_cfg is None:
            return
        unused = ("fc.", *(f"layer{i}." for i in range(self.num_stages + 1, 5)))
        self.load_state_dict({k: v for k, v in self.init_cfg.load_state_dict().items() if not k.startswith(unused)})

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [B, 3, H, W]`` -> one ``[B, C_i, H / s_i, W / s_i]`` map per entry of ``out_indices``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
            if index in self.out_indices:
                outs.append(x)
        return outs
