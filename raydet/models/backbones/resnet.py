"""ResNet-18/34/50/101 feature extractor, built from torchvision's ResNet."""
from __future__ import annotations

from functools import partial
from typing import Literal

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from ...registry import MODELS
from ..folded_norm import ConvNormFolder
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
        fold_norm: compute each convolution and the norm layer after it as one convolution
            whenever the norm normalises with constants (``FrozenBN`` always, ``BN`` when in
            eval mode, which ``norm_eval`` keeps it in while training); see
            ``raydet.models.folded_norm``.  Same function up to rounding, same parameters and
            state_dict; the blocks' own ``forward`` (and hooks on them) are then not called.
        init_cfg: pretrained weights, loaded by ``init_weights()``.
    """

    def __init__(self, depth: Literal[18, 34, 50, 101], out_indices: tuple[int, ...] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm: Literal["BN", "FrozenBN"] = "BN", norm_eps: float = 1e-5,
                 norm_eval: bool = True, fold_norm: bool = True, init_cfg: Pretrained | None = None):
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
        self.fold_norm = fold_norm
        self.init_cfg = init_cfg
        self._folder = ConvNormFolder()
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

    def _apply(self, fn, *args, **kwargs):
        self._folder.clear()  # tensors moved or converted: fold again
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [B, 3, H, W]`` -> one ``[B, C_i, H / s_i, W / s_i]`` map per entry of ``out_indices``."""
        if self.fold_norm:
            x = self.relu(self._folder("conv1", self.conv1, self.bn1, x))
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for index in range(self.num_stages):
            name = f"layer{index + 1}"
            layer = getattr(self, name)
            if self.fold_norm:
                for block_index, block in enumerate(layer):
                    x = self._block_forward(f"{name}.{block_index}", block, x)
            else:
                x = layer(x)
            if index in self.out_indices:
                outs.append(x)
        return outs

    def _block_forward(self, name: str, block: BasicBlock | Bottleneck, x: Tensor) -> Tensor:
        """torchvision's ``BasicBlock`` / ``Bottleneck`` forward, each conv + norm through the folder."""
        pairs = ["1", "2", "3"] if isinstance(block, Bottleneck) else ["1", "2"]
        out = x
        for position, index in enumerate(pairs):
            out = self._folder(f"{name}.conv{index}", getattr(block, f"conv{index}"), getattr(block, f"bn{index}"), out)
            if position < len(pairs) - 1:
                out = block.relu(out)
        identity = x
        if block.downsample is not None:
            identity = self._folder(f"{name}.downsample", block.downsample[0], block.downsample[1], x)
        out += identity
        return block.relu(out)
