"""What every raydet detector offers: ``extract_feat``, ``forward_train``, ``simple_test``, ``aug_test`` and
``forward``, which dispatches between training and testing."""
from __future__ import annotations

import abc

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from ..detection_head import DetectionHead
from ..pretrained import Pretrained
from ..torchvision_weights import is_torchvision_state_dict, load_torchvision_detector
from .mask_pasting import paste_masks
from .original_frame import detections_to_original


class BaseDetector(nn.Module, metaclass=abc.ABCMeta):
    """A detector: ``backbone`` -> ``neck`` -> task-specific heads.

    ``forward(img, img_metas, gt_bboxes, gt_labels, return_loss=True, gt_masks=None)`` is
    what a trainer calls with a collated batch: it returns the loss dict (every key with
    "loss" in it is summed into the objective, other entries are only logged) or,
    with ``return_loss=False``, the detections of ``simple_test``.  ``gt_masks`` (per image
    ``[N_i, H_i, W_i]`` uint8, in the pixels of ``gt_bboxes``) go with a detector that
    segments (``final_head.with_mask``) and with no other.

    Detections: one ``{"boxes": [K, 4] x1y1x2y2, "scores": [K], "labels": [K] int64}``
    per image; a detector that segments adds ``"masks": [K, H, W]`` bool, the image's
    pixels of each detection.  ``init_weights()`` loads the pretrained weights named by
    ``init_cfg``; call it once after building, before training.
    """

    #: the name of the matching torchvision detector, for converting its weights
    torchvision_arch: str | None = None

    def __init__(self, backbone: nn.Module, neck: nn.Module | None = None, init_cfg: Pretrained | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.init_cfg = init_cfg

    def extract_feat(self, img: Tensor) -> list[Tensor]:
        """``img [B, 3, H, W]`` -> feature maps, finest first."""
        feats = self.backbone(img)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, img: Tensor, img_metas: list[dict], gt_bboxes: list[Tensor] | None = None,
                gt_labels: list[Tensor] | None = None, return_loss: bool = True,
                gt_masks: list[Tensor] | None = None):
        if return_loss:
            if gt_bboxes is None or gt_labels is None:
                raise ValueError("training needs gt_bboxes and gt_labels (or pass return_loss=False)")
            return self.forward_train(img, img_metas, gt_bboxes, gt_labels, gt_masks)
        return self.simple_test(img, img_metas)

    @abc.abstractmethod
    def forward_train(self, img: Tensor, img_metas: list[dict], gt_bboxes: list[Tensor],
                      gt_labels: list[Tensor], gt_masks: list[Tensor] | None = None) -> dict[str, Tensor]:
        """Losses for a batch: ``img [B, 3, H, W]``, per image ``gt_bboxes [N_i, 4]``, ``gt_labels [N_i]``
        and, for a detector that segments, ``gt_masks [N_i, H_i, W_i]`` (see ``check_gt_masks``)."""

    def check_gt_masks(self, gt_masks: list[Tensor] | None) -> None:
        """Refuse a training batch whose masks do not fit the detector: masks for one without a
        mask head, or none for one with a mask head."""
        name = type(self).__name__
        if gt_masks is not None and not self.final_head.with_mask:
            raise ValueError(f"{name} has no mask head, but the batch has gt_masks: drop with_mask from the "
                             f"data config (or train a detector with a mask head, e.g. MaskRCNN)")
        if gt_masks is None and self.final_head.with_mask:
            raise ValueError(f"{name} trains a mask head and needs gt_masks in its training batches: "
                             f"set with_mask: true on the data config's training split")

    @abc.abstractmethod
    def detect(self, img: Tensor, img_metas: list[dict]) -> list[dict[str, Tensor]]:
        """Detections per image in its resized frame (``img_shape``), clipped to it."""

    @property
    @abc.abstractmethod
    def final_head(self) -> DetectionHead:
        """The head that makes the detections; its ``nms_iou_thr`` and ``max_per_img`` merge TTA results."""

    def simple_test(self, img: Tensor, img_metas: list[dict], rescale: bool = True) -> list[dict[str, Tensor]]:
        """Detections per image: with ``rescale`` in original-image pixels (masks ``[K, *ori_shape]``),
        else in the resized frame (masks ``[K, *img_shape]``)."""
        results = self.detect(img, img_metas)
        if rescale:
            results = [detections_to_original(result, meta) for result, meta in zip(results, img_metas)]
        return [self.paste_masks(result, meta["ori_shape"] if rescale else meta["img_shape"])
                for result, meta in zip(results, img_metas)]

    def paste_masks(self, result: dict[str, Tensor], image_shape: tuple[int, int]) -> dict[str, Tensor]:
        """``result``'s ``mask_probs [K, M, M]`` (if any) -> ``masks [K, *image_shape]`` bool, pasted at its
        ``boxes`` (in the pixels of that image) and thresholded at the final head's ``mask_thr_binary``."""
        if "mask_probs" not in result:
            return result
        result = dict(result)
        result["masks"] = paste_masks(result.pop("mask_probs"), result["boxes"], image_shape,
                                      self.final_head.mask_thr_binary)
        return result

    def aug_test(self, imgs: list[Tensor], img_metas: list[list[dict]],
                 rescale: bool = True) -> list[dict[str, Tensor]]:
        """Test-time augmentation: ``imgs[a]`` is the whole batch under augmentation ``a``
        (a scale, possibly flipped), ``img_metas[a]`` its metas.

        Each augmentation's detections are mapped back to the original image, pooled,
        and merged by class-wise NMS (the final head's ``nms_iou_thr``, ``max_per_img``);
        the kept detections keep their own mask grids (un-flipped), pasted at the merged
        boxes.  Without ``rescale`` the boxes (and masks) are put in the first augmentation's
        resized frame.
        """
        per_augmentation = []
        for img, metas in zip(imgs, img_metas):
            results = self.detect(img, metas)
            per_augmentation.append([detections_to_original(result, meta) for result, meta in zip(results, metas)])
        head = self.final_head
        merged = []
        for meta, image_results in zip(img_metas[0], zip(*per_augmentation)):
            pooled = {key: torch.cat([result[key] for result in image_results]) for key in image_results[0]}
            keep = batched_nms(pooled["boxes"], pooled["scores"], pooled["labels"], head.nms_iou_thr)[:head.max_per_img]
            result = {key: value[keep] for key, value in pooled.items()}
            if not rescale:
                result["boxes"] = result["boxes"] * result["boxes"].new_tensor(meta["scale_factor"])
            merged.append(self.paste_masks(result, meta["ori_shape"] if rescale else meta["img_shape"]))
        return merged

    def init_weights(self) -> None:
        """Load pretrained weights: the detector's ``init_cfg`` if it has one (a whole
        detector's weights), else each part's (e.g. the backbone's ImageNet weights).

        A torchvision detection checkpoint (keys ``backbone.body.*``) is converted
        on the way (see ``raydet.models.torchvision_weights``).
        """
        if self.init_cfg is None:
            for module in self.modules():
                if module is not self and hasattr(module, "init_weights"):
                    module.init_weights()
            return
        state = self.init_cfg.load_state_dict()
        if is_torchvision_state_dict(state):
            load_torchvision_detector(self, state)
        else:
            self.load_state_dict(state)
