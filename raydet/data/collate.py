"""Collate: samples -> the ``Batch`` the model receives; and a ``Batch`` <-> flat numpy columns for Ray Data.

``Batch`` (the model's forward arguments, ``model(**batch)``)::

    img        float32 [B, 3, H, W]  normalised, padded bottom/right to a multiple of 32, stacked
    img_metas  list of B dicts: ori_shape (h, w), img_shape (h, w), pad_shape (h, w),
               batch_input_shape (H, W), scale_factor [w, h, w, h] floats, flip bool,
               flip_direction "horizontal" / "vertical" / "diagonal" / None, image_id int
    gt_bboxes  list of B float32 [N_i, 4] x1y1x2y2 in the img_shape frame (ignored boxes excluded)
    gt_labels  list of B int64 [N_i]
    gt_masks   list of B uint8 [N_i, H_i, W_i] (0 / 1) instance masks in step with gt_bboxes, in the
               same pixel frame: (H_i, W_i) is image i's own size (its pad_shape), not the stacked
               (H, W); only for a dataset read with masks (``with_mask``)

Evaluation batches carry only ``img`` and ``img_metas`` (mmdetection's test
pipeline does the same), so ``model(**batch, return_loss=False)`` works as is.

**Normalised on arrival.**  A batch decoded by ``raydet.data.decode.decode_planned_batch``
(Ray Data's training and evaluation streams, the inference actors, the MLflow
pyfunc) leaves the pipeline's ``Normalize`` to the device that uses it: ``img``
is still uint8, zero-padded, and ``img_norm`` holds the ``Normalize``'s
``mean``, ``std`` and ``to_bgr``.  ``to_device(batch, device)`` moves it and
normalises there, giving the float batch above bit for bit.  The decode CPUs
then neither normalise (about a third of an image's preparation at 1333 x 800)
nor ship float pixels (4 bytes a value instead of 1); on a GPU normalising
costs next to nothing.

``pack_batch`` / ``unpack_batch`` turn a ``Batch`` into one row of plain numpy
columns (no Python objects) and back, which is how a batch collated inside a
Ray Data task travels to the training worker.  Masks travel as compressed RLE
(a few hundred bytes per instance instead of ``H_i * W_i``) and are decoded back
exactly on arrival.
"""
from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvf

from .masks import decode_masks, encode_masks
from .sample import Sample

FLIP_DIRECTIONS = (None, "horizontal", "vertical", "diagonal")  # index = the packed flip code


class Batch(TypedDict, total=False):
    img: torch.Tensor
    img_metas: list[dict]
    gt_bboxes: list[torch.Tensor]
    gt_labels: list[torch.Tensor]
    gt_masks: list[torch.Tensor]
    img_norm: dict  # only while ``img`` is uint8: {"mean": [3 floats], "std": [3 floats], "to_bgr": bool}


def collate(samples: list[Sample], size_divisor: int = 32, with_gt: bool = True,
            with_mask: bool | None = None) -> Batch:
    """Pad each image bottom/right to the batch's shape (a multiple of ``size_divisor``) and stack.

    ``pad_shape`` stays each image's own padded size (``Pad``'s, else its
    ``img_shape``); ``batch_input_shape`` is the stacked tensor's ``(H, W)``.
    An empty list gives an empty batch (``img`` ``[0, 3, 0, 0]``).

    ``with_mask`` (with ``with_gt``): add ``gt_masks``; ``None`` decides by the samples,
    which must then all carry masks or none.  Say ``True`` for the batches of a dataset with
    masks, so that one left empty by bad images has the same keys (``gt_masks == []``).
    """
    heights = [s.pad_shape[0] for s in samples] or [0]
    widths = [s.pad_shape[1] for s in samples] or [0]
    batch_h = math.ceil(max(heights) / size_divisor) * size_divisor
    batch_w = math.ceil(max(widths) / size_divisor) * size_divisor
    dtype = samples[0].img.dtype if samples else torch.float32
    img = torch.zeros((len(samples), 3, batch_h, batch_w), dtype=dtype)
    for i, sample in enumerate(samples):
        img[i, :, : sample.height, : sample.width] = sample.img
    batch = Batch(img=img, img_metas=[
        {
            "ori_shape": tuple(s.ori_shape), "img_shape": tuple(s.img_shape), "pad_shape": tuple(s.pad_shape),
            "batch_input_shape": (batch_h, batch_w), "scale_factor": [float(v) for v in s.scale_factor],
            "flip": bool(s.flip), "flip_direction": s.flip_direction, "image_id": int(s.image_id),
        }
        for s in samples
    ])
    if with_gt:
        batch["gt_bboxes"] = [s.boxes[~s.ignore].to(torch.float32) for s in samples]
        batch["gt_labels"] = [s.labels[~s.ignore].to(torch.int64) for s in samples]
        if _batch_has_masks(samples, with_mask):
            batch["gt_masks"] = [s.masks[~s.ignore].to(torch.uint8) for s in samples]
    return batch


def to_device(batch: Batch, device: torch.device | str = "cpu") -> Batch:
    """Move a Batch's tensors (and its per-image lists') to ``device``; a batch with ``img_norm`` is then
    normalised there (``normalize_images``), so the model always receives float32 normalised pixels."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    moved = Batch(**{key: move(value) for key, value in batch.items() if key != "img_norm"})
    if "img_norm" in batch:
        moved["img"] = normalize_images(moved["img"], moved["img_metas"], **batch["img_norm"])
    return moved


def normalize_images(img: torch.Tensor, img_metas: list[dict], mean: list[float], std: list[float],
                     to_bgr: bool = False) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> float32 ``[B, 3, H, W]``: what ``Normalize`` then zero padding do to each image
    (the same operations, so the same values), with everything outside each image's ``img_shape`` 0."""
    if to_bgr:
        img = img.flip(1)
    out = tvf.normalize_image(img.to(torch.float32, copy=True), mean, std, inplace=True)
    for i, meta in enumerate(img_metas):
        height, width = meta["img_shape"]
        out[i, :, height:] = 0
        out[i, :, :height, width:] = 0
    return out


def _batch_has_masks(samples: list[Sample], with_mask: bool | None) -> bool:
    """Whether a batch of ``samples`` gets ``gt_masks`` (see ``collate``); ``ValueError`` when it cannot."""
    without = [s.image_id for s in samples if s.masks is None]
    with_masks = [s.image_id for s in samples if s.masks is not None]
    if with_mask is None:
        with_mask = bool(with_masks)
    if with_mask and without:
        wanted = f"images {with_masks} of the same batch have masks" if with_masks else "with_mask=True asks for them"
        raise ValueError(f"cannot collate gt_masks: images {without} have no masks but {wanted}; "
                         "read the dataset with with_mask: true")
    return with_mask


def pack_batch(batch: Batch) -> dict[str, np.ndarray]:
    """A ``Batch`` -> numpy columns (per-image lists concatenated, with counts)."""
    metas = batch["img_metas"]
    size = len(metas)

    def meta_array(key: str, dtype: type, width: int) -> np.ndarray:
        return np.array([m[key] for m in metas], dtype=dtype).reshape(size, width)

    packed = {
        "img": batch["img"].numpy(),
        "image_id": meta_array("image_id", np.int64, 1).reshape(size),
        "ori_shape": meta_array("ori_shape", np.int64, 2),
        "img_shape": meta_array("img_shape", np.int64, 2),
        "pad_shape": meta_array("pad_shape", np.int64, 2),
        "scale_factor": meta_array("scale_factor", np.float64, 4),
        "flip_code": np.array([FLIP_DIRECTIONS.index(m["flip_direction"] if m["flip"] else None) for m in metas],
                              np.int8),
    }
    if "gt_bboxes" in batch:
        packed["gt_counts"] = np.array([len(b) for b in batch["gt_bboxes"]], np.int64)
        packed["gt_bboxes"] = torch.cat(batch["gt_bboxes"]).numpy() if size else np.zeros((0, 4), np.float32)
        packed["gt_labels"] = torch.cat(batch["gt_labels"]).numpy() if size else np.zeros(0, np.int64)
    if "gt_masks" in batch:
        packed.update(pack_masks(batch["gt_masks"]))
    if "img_norm" in batch:
        norm = batch["img_norm"]
        packed.update(norm_mean=np.array(norm["mean"], np.float64), norm_std=np.array(norm["std"], np.float64),
                      norm_to_bgr=np.array(bool(norm["to_bgr"])))
    return packed


def pack_masks(masks: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-image ``[N_i, H_i, W_i]`` uint8 masks -> compressed RLE in numpy columns.

    Returns:
        ``gt_mask_shape`` int64 ``[B, 2]`` (each image's ``H_i, W_i``), ``gt_mask_rle_lengths``
        int64 ``[sum N_i]`` (bytes of each mask's RLE ``counts``, image by image) and ``gt_mask_rle``
        uint8 ``[sum of lengths]`` (those ``counts`` concatenated).  ``N_i`` is ``gt_counts``.
    """
    counts = [rle for image_masks in masks for rle in encode_masks(image_masks.numpy())]
    return {
        "gt_mask_shape": np.array([m.shape[-2:] for m in masks], np.int64).reshape(len(masks), 2),
        "gt_mask_rle_lengths": np.array([len(c) for c in counts], np.int64),
        "gt_mask_rle": np.frombuffer(b"".join(counts), np.uint8).copy(),
    }


def unpack_masks(packed: dict[str, np.ndarray]) -> list[torch.Tensor]:
    """``pack_masks``' columns (with ``gt_counts``) -> per-image ``[N_i, H_i, W_i]`` uint8 masks."""
    buffer = np.asarray(packed["gt_mask_rle"], np.uint8).tobytes()
    ends = np.cumsum(packed["gt_mask_rle_lengths"])
    counts = [buffer[end - length:end] for end, length in zip(ends, packed["gt_mask_rle_lengths"])]
    first = np.cumsum(packed["gt_counts"]) - packed["gt_counts"]
    return [torch.from_numpy(decode_masks(counts[start:start + number], int(height), int(width)))
            for start, number, (height, width) in zip(first, packed["gt_counts"], packed["gt_mask_shape"])]


def unpack_batch(packed: dict[str, np.ndarray]) -> Batch:
    """Numpy columns from ``pack_batch`` -> a ``Batch`` of torch tensors (copies: the inputs may be read-only)."""
    img = torch.from_numpy(np.array(packed["img"], copy=True))
    batch_input_shape = (int(img.shape[-2]), int(img.shape[-1]))
    metas = []
    for i, image_id in enumerate(packed["image_id"]):
        code = int(packed["flip_code"][i])
        metas.append({
            "ori_shape": tuple(int(v) for v in packed["ori_shape"][i]),
            "img_shape": tuple(int(v) for v in packed["img_shape"][i]),
            "pad_shape": tuple(int(v) for v in packed["pad_shape"][i]),
            "batch_input_shape": batch_input_shape,
            "scale_factor": [float(v) for v in packed["scale_factor"][i]],
            "flip": code != 0,
            "flip_direction": FLIP_DIRECTIONS[code],
            "image_id": int(image_id),
        })
    batch = Batch(img=img, img_metas=metas)
    if "gt_counts" in packed:
        ends = np.cumsum(packed["gt_counts"])
        starts = ends - packed["gt_counts"]
        boxes = torch.from_numpy(np.array(packed["gt_bboxes"], dtype=np.float32).reshape(-1, 4))
        labels = torch.from_numpy(np.array(packed["gt_labels"], dtype=np.int64).reshape(-1))
        batch["gt_bboxes"] = [boxes[start:end] for start, end in zip(starts, ends)]
        batch["gt_labels"] = [labels[start:end] for start, end in zip(starts, ends)]
    if "gt_mask_rle" in packed:
        batch["gt_masks"] = unpack_masks(packed)
    if "norm_mean" in packed:
        batch["img_norm"] = {"mean": [float(v) for v in packed["norm_mean"]],
                             "std": [float(v) for v in packed["norm_std"]], "to_bgr": bool(packed["norm_to_bgr"])}
    return batch
