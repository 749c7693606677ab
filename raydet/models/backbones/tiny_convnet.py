"""A small plain ConvNet backbone for CPU tests and demos."""
from __future__ import annotations

from torch import Tensor, nn

from ...registry import MODELS
from ..conv_module import ConvModule, Norm


@MODELS.register()
class TinyConvNet(nn.Module):
    """A 3x3 stride-2 stem, then stages of (3x3 stride-2 conv + ``blocks_per_stage`` 3x3
    convs), each conv followed by a norm layer and ReLU.

    With the default four stages stage ``i`` has stride ``4 * 2**i`` like a ResNet's,
    so every neck and head config that fits ResNet fits this one with smaller
    channel numbers.

    Args:
        channels: output channels of each stage.
        stem_channels: output channels of the stem.
        blocks_per_stage: stride-1 convs after each stage's downsampling conv.
        out_indices: the stages whose outputs ``forward`` returns, in order.
        norm: ``BN`` (BatchNorm) or ``GN`` (GroupNorm, ``num_groups`` groups: independent of
            the batch size, for training from scratch with a few images per worker).
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), stem_channels: int = 16,
                 blocks_per_stage: int = 1, out_indices: tuple[int, ...] = (0, 1, 2, 3), norm: Norm = "BN",
                 num_groups: int = 8):
        super().__init__()
        if not out_indices or any(i not in range(len(channels)) for i in out_indices):
            raise ValueError(f"out_indices must be stage numbers in 0..{len(channels) - 1}, got {list(out_indices)}")
        self.stem = ConvModule(3, stem_channels, 3, stride=2, norm=norm, num_groups=num_groups)
        self.stages = nn.ModuleList()
        in_channels = stem_channels
        for out_channels in channels[:max(out_indices) + 1]:  # stages after the last output are not built
            convs = [ConvModule(in_channels, out_channels, 3, stride=2, norm=norm, num_groups=num_groups)]
            convs += [ConvModule(out_channels, out_channels, 3, norm=norm, num_groups=num_groups)
                      for _ in range(blocks_per_stage)]
            self.stages.append(nn.Sequential(*convs))
            in_channels = out_channels
        self.out_indices = tuple(out_indices)
        self.out_channels = [channels[i] for i in self.out_indices]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [B, 3, H, W]`` -> one ``[B, C_i, H / s_i, W / s_i]`` map per entry of ``out_indices``."""
        x = self.stem(x)
        outs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.out_indices:
                outs.append(x)
        return outs
