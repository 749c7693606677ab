"""Reading and decoding images: local paths or URIs in, RGB uint8 ``[3, H, W]`` tensors out.

Paths and URIs (``s3://``, ``gs://``, ``file://`` …) are read through
``raydet.storage``.  Grayscale, palette, RGBA and 16-bit images all become RGB
uint8, and the EXIF orientation is applied (the frame labelme and CVAT draw
boxes in).

Hostile files are refused, not decoded: the header's declared size is read
first (Pillow's lazy ``Image.open``) and more than ``MAX_IMAGE_PIXELS`` is an
``oversized_image`` (a decompression bomb: a few hundred bytes declaring
60000 x 60000).  JPEG, WebP and GIF are decoded by
``torchvision.io.decode_image``; PNG, BMP and TIFF by Pillow, because
torchvision's PNG decoder ends the process (a segmentation fault) on any libpng
error — a truncated file, a flipped byte in its data.
"""
from __future__ import annotations

import io
import os

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torchvision.io

from .. import storage

#: Declared pixels above which an image is refused before decoding: Pillow's own bomb limit (about 9459²;
#: 268 MB of RGB).  Larger images (orthophotos) are tiled first (``raydet.data.prepare``).
MAX_IMAGE_PIXELS = 89_478_485
#: The formats read; the first three are decoded by torchvision, the others by Pillow.
TORCHVISION_FORMATS = ("JPEG", "WEBP", "GIF")
PILLOW_FORMATS = ("PNG", "BMP", "TIFF")
# Pillow's own check (a warning above its limit, an error above twice it) gives way to ours, which names the file
# and the declared size whichever decoder reads the image.
PIL.Image.MAX_IMAGE_PIXELS = None


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
    """Encoded JPEG / PNG / WebP / GIF / BMP / TIFF bytes -> RGB uint8 ``[3, H, W]`` (EXIF orientation applied).

    Raises ``ImageError``: ``empty_image``, ``corrupt_image`` (not an image of these formats, or its data cannot
    be decoded) or ``oversized_image`` (more than ``MAX_IMAGE_PIXELS`` declared; nothing is decoded).
    """
    if not data:
        raise ImageError("empty_image", f"image is empty (0 bytes): {name}")
    header = _open_header(data, name)
    width, height = header.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError("oversized_image", f"{name} declares {width} x {height} pixels, more than "
                                            f"{MAX_IMAGE_PIXELS} (a decompression bomb, or an image to tile first): "
                                            "refused before decoding")
    if width == 0 or height == 0:
        raise ImageError("empty_image", f"image has zero width or height: {name}")
    if header.format in TORCHVISION_FORMATS:
        return _decode_with_torchvision(data, name)
    return _decode_with_pillow(header, name)


def _open_header(data: bytes, name: str) -> PIL.Image.Image:
    """Pillow's lazy image: format and declared size read from the header, no pixel decoded yet."""
    try:
        return PIL.Image.open(io.BytesIO(data), formats=TORCHVISION_FORMATS + PILLOW_FORMATS)
    except PIL.UnidentifiedImageError:
        raise ImageError("corrupt_image", f"cannot decode {name}: not a JPEG, PNG, WebP, GIF, BMP or TIFF image "
                                          "(whatever its extension)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # a malformed header
        raise ImageError("corrupt_image", f"cannot decode {name}: {err}") from None


def _decode_with_torchvision(data: bytes, name: str) -> torch.Tensor:
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        image = torchvision.io.decode_image(encoded, mode=torchvision.io.ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as err:
        reason = str(err).splitlines()[-1].split(", ", 2)[-1].strip()  # after torchvision's "function, file:line, "
        raise ImageError("corrupt_image", f"cannot decode {name}: {reason}") from None
    if image.ndim == 4:  # an animated GIF: its first frame
        image = image[0]
    return image


def _decode_with_pillow(header: PIL.Image.Image, name: str) -> torch.Tensor:
    try:
        header.load()
        image = PIL.ImageOps.exif_transpose(header)
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or corrupt data: Pillow raises
        raise ImageError("corrupt_image", f"cannot decode {name}: {err}") from None
    if image.mode.startswith("I"):  # 16-bit (or 32-bit) grayscale: the high byte, as torchvision scales it
        gray = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255)
        rgb = np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
    else:
        rgb = np.asarray(image.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


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
