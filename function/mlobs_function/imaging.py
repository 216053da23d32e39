"""Untrusted bytes → a normalised image array, with bounded cost.

Pillow and numpy only (no torch), so the request path can reject bad input without the model.
Preprocessing is the ImageNet evaluation convention — resize the shorter side to size·256/224,
centre-crop ``size``, scale to [0, 1], normalise per channel — for torchvision's architectures and
the tiny model alike (``train`` feeds its synthetic images through this same function).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

# Formats a client may send. Listing them keeps Pillow away from every other decoder it has
# (EPS would start Ghostscript, for one).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class UndecodableImage(ValueError):
    """The bytes are not an image this function reads; the message is safe to show a client."""


def resize_target(size: int) -> int:
    return round(size * 256 / 224)


def decode_image(data: bytes, *, max_pixels: int, size_hint: int | None = None) -> Image.Image:
    """An RGB image from PNG/JPEG/WebP bytes; anything else raises :class:`UndecodableImage`.

    The pixel count is checked from the header before any pixel is decoded. With ``size_hint``
    (the model's input size) a large JPEG is decoded at a reduced scale by libjpeg itself, which
    is many times cheaper than decoding at full size and resizing afterwards.
    """
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise UndecodableImage("the image has no pixels")
            if width * height > max_pixels:
                raise UndecodableImage(f"the image has more than {max_pixels} pixels")
            if size_hint and image.format == "JPEG":
                shorter = resize_target(size_hint) / min(width, height)
                image.draft("RGB", (math.ceil(width * shorter), math.ceil(height * shorter)))
            return image.convert("RGB")  # decodes here; truncated data fails here
    except UndecodableImage:
        raise
    except MemoryError:
        raise  # the service's problem, not the client's
    except Exception:
        # Pillow signals corrupt input with many types (OSError, SyntaxError, struct.error,
        # zlib.error, DecompressionBombError…); for untrusted bytes they all mean the same.
        raise UndecodableImage("the body is not a readable PNG, JPEG or WebP image") from None


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """A float32 batch of one, shape (1, 3, size, size), normalised with ImageNet statistics."""
    width, height = image.size
    scale = resize_target(size) / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis])
