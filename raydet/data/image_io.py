"""Reading and decoding images: local paths or URIs in, RGB uint8 ``[3, H, W]`` tensors out.

Paths and URIs (``s3://``, ``gs://``, ``file://`` …) are read through
``raydet.storage``.  Decoding is ``torchvision.io.decode_image``:
grayscale, palette, RGBA and 16-bit images all become RGB uint8, and the EXIF
orientation of JPEGs is applied.
"""
from __future__ import annotations

import os

import torch
import torchvision.io
import torchvision.transforms.v2.functional as F

from .. import storage


class ImageError(Exception):
    """An image that cannot be used; ``kind`` is its problem kind (``missing_image`` …)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def read_bytes(path: str) -> bytes:
    """The bytes of a local file or a URI; ``ImageError`` when missing or empty."""
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        raise ImageError("missing_image", f"image file not found: {path}") from None
    except OSError as err:
        raise ImageError("corrupt_image", f"cannot read {path}: {storage.describe(err)}") from None
    if not data:
        raise ImageError("empty_image", f"image file is empty (0 bytes): {path}")
    return data


def decode_rgb(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Encoded JPEG / PNG / WebP / GIF bytes -> RGB uint8 ``[3, H, W]`` (EXIF orientation applied)."""
    if not data:
        raise ImageError("empty_image", f"image is empty (0 bytes): {name}")
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        image = torchvision.io.decode_image(encoded, mode=torchvision.io.ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as err:
        reason = str(err).splitlines()[-1].split(", ", 2)[-1].strip()  # after torchvision's "function, file:line, "
        if reason.startswith("Unsupported image file"):
            reason = "not a JPEG, PNG, WebP or GIF image"
        raise ImageError("corrupt_image", f"cannot decode {name}: {reason}") from None
    if image.ndim == 4:  # an animated GIF: its first frame
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = F.to_dtype(image, torch.uint8, scale=True)
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ImageError("empty_image", f"image has zero width or height: {name}")
    return image


def load_rgb(path: str | bytes) -> torch.Tensor:
    """Read and decode a record's ``path`` (a path, a URI or the encoded bytes) -> uint8 ``[3, H, W]``."""
    if isinstance(path, bytes):
        return decode_rgb(path)
    return decode_rgb(read_bytes(path), path)


def local_file_problem(path: str | bytes) -> ImageError | None:
    """For a local path: the ``ImageError`` it would raise when read (missing / empty), else None.

    URIs and in-record bytes are not checked here (they are checked when decoded).
    """
    if isinstance(path, bytes) or storage.is_uri(path):
        return None
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return ImageError("missing_image", f"image file not found: {path}")
    except OSError as err:
        return ImageError("missing_image", f"cannot stat {path}: {err.strerror}")
    if size == 0:
        return ImageError("empty_image", f"image file is empty (0 bytes): {path}")
    return None
