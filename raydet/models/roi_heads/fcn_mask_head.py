"""Mask head of Mask R-CNN (arXiv 1703.06870): a small FCN predicting a mask per RoI and class."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from ...registry import MODELS
from ..conv_module import ConvModule


@MODELS.register()
class FCNMaskHead(nn.Module):
    """``[R, C, S, S]`` RoI features -> ``num_convs`` 3x3 conv + ReLU -> 2x2 stride-2 deconv + ReLU ->
    1x1 ``conv_logits``: mask logits ``[R, num_classes, 2S, 2S]`` (``[R, 1, 2S, 2S]`` with
    ``class_agnostic``).  No background channel.

    Targets (torchvision's ``project_masks_on_boxes``): each positive RoI's ground-truth
    mask, cropped to the RoI and resized to ``2S x 2S`` by RoIAlign — soft values in
    ``[0, 1]``.  Loss (torchvision's ``maskrcnn_loss``): the module ``loss_mask``
    (``CrossEntropyLoss`` with ``use_sigmoid``: binary cross-entropy with logits) of each
    positive RoI's class channel against its target, averaged over all their pixels.

    Parameter names are mmdetection's (``convs.<i>.conv``, ``upsample``, ``conv_logits``);
    the weights are initialised as torchvision's (Kaiming normal, fan-out, zero bias).
    """

    def __init__(self, num_classes: int, loss_mask: nn.Module, num_convs: int = 4, in_channels: int = 256,
                 conv_out_channels: int = 256, roi_feat_size: int = 14, class_agnostic: bool = False):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.loss_mask = loss_mask
        self.roi_feat_size = roi_feat_size
        self.class_agnostic = class_agnostic
        self.convs = nn.ModuleList([ConvModule(in_channels if i == 0 else conv_out_channels, conv_out_channels, 3)
                                    for i in range(num_convs)])
        upsample_in = conv_out_channels if num_convs else in_channels
        self.upsample = nn.ConvTranspose2d(upsample_in, conv_out_channels, kernel_size=2, stride=2)
        self.conv_logits = nn.Conv2d(conv_out_channels, 1 if class_agnostic else num_classes, kernel_size=1)
        for layer in (*(module.conv for module in self.convs), self.upsample, self.conv_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks (and of their targets): twice the pooled features'."""
        return 2 * self.roi_feat_size

    def forward(self, roi_feats: Tensor) -> Tensor:
        """``[R, C, S, S]`` -> mask logits ``[R, num_classes, 2S, 2S]`` (``[R, 1, 2S, 2S]`` class-agnostic)."""
        x = roi_feats
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(torch.relu(self.upsample(x)))

    def mask_targets(self, pos_boxes: Tensor, pos_assigned_gt: Tensor, gt_masks: Tensor) -> Tensor:
        """Targets ``[P, M, M]`` in ``[0, 1]`` (``M = mask_size``) for one image.

        Args:
            pos_boxes: ``[P, 4]`` x1y1x2y2 positive RoIs, in the pixels of ``gt_masks``.
            pos_assigned_gt: ``[P]`` int64 index of each RoI's ground truth.
            gt_masks: ``[N, H, W]`` the image's instance masks (uint8 / bool, 1 inside).
        """
        if pos_boxes.shape[0] == 0:
            return pos_boxes.new_zeros((0, self.mask_size, self.mask_size))
        # Only the matched masks are turned into floats (torchvision converts all N): the same targets.
        used, index = pos_assigned_gt.unique(return_inverse=True)
        return project_masks_on_boxes(gt_masks[used], pos_boxes, index, self.mask_size)

    def channel(self, mask_logits: Tensor, labels: Tensor) -> Tensor:
        """``[R, K, M, M]`` -> ``[R, M, M]``: each RoI's channel of class ``labels [R]`` (channel 0 class-agnostic)."""
        rows = torch.arange(mask_logits.shape[0], device=mask_logits.device)
        return mask_logits[rows, 0 if self.class_agnostic else labels]

    def loss(self, mask_logits: Tensor, mask_targets: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``loss_mask`` of the positive RoIs: ``mask_logits [P, K, M, M]``, ``mask_targets [P, M, M]``,
        ``labels [P]`` (0 when there are no positives, still connected to every parameter)."""
        if mask_targets.numel() == 0:
            return {"loss_mask": mask_logits.sum() * 0}
        return {"loss_mask": self.loss_mask(self.channel(mask_logits, labels), mask_targets)}

    def mask_probs(self, mask_logits: Tensor, labels: Tensor) -> Tensor:
        """Foreground probabilities ``[K, M, M]`` of each detection's class, ``labels [K]``."""
        return self.channel(mask_logits, labels).sigmoid()
