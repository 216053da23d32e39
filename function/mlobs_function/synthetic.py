"""Synthetic images for the tiny model and the traffic generator — Pillow only, no data sets.

The class names are ImageNet-style breeds so the logs read like the production classifier's and the
SLO contracts ("share of class golden retriever") apply as written, but the pictures are nothing
of the sort: each class is a distinct coloured shape (a gold disc is a "golden retriever") drawn
at a random place and size on a noisy, muted background. A tiny CNN separates them in seconds,
which is all the tests and the demo need from a model: real inference on real image bytes.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Pattern:
    shape: str  # disc, square, triangle, stripes, ring, checker
    colour: RGB
    accent: RGB


PATTERNS: dict[str, Pattern] = {
    "golden retriever": Pattern("disc", (222, 170, 40), (222, 170, 40)),
    "labrador retriever": Pattern("square", (70, 45, 25), (70, 45, 25)),
    "beagle": Pattern("triangle", (165, 95, 40), (245, 245, 240)),
    "tabby cat": Pattern("stripes", (200, 125, 55), (60, 45, 35)),
    "siamese cat": Pattern("ring", (235, 225, 195), (55, 40, 35)),
    "border collie": Pattern("checker", (20, 20, 20), (240, 240, 240)),
}
CLASSES: tuple[str, ...] = tuple(PATTERNS)


def _jitter(colour: RGB, rng: random.Random, amount: int = 18) -> RGB:
    r, g, b = (min(255, max(0, c + rng.randint(-amount, amount))) for c in colour)
    return (r, g, b)


def render(label: str, rng: random.Random, size: int = 96) -> Image.Image:
    """One RGB image of class ``label``, ``size`` pixels square."""
    pattern = PATTERNS[label]
    grey = rng.randint(90, 170)
    background = _jitter((grey, grey, grey), rng, 25)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.22, 0.36) * size
    cx, cy = (rng.uniform(radius, size - radius) for _ in range(2))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    colour, accent = _jitter(pattern.colour, rng), _jitter(pattern.accent, rng)
    _SHAPES[pattern.shape](draw, box, colour, accent)
    noise = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    return Image.blend(image, noise, 0.12)


def _disc(draw: ImageDraw.ImageDraw, box, colour: RGB, accent: RGB) -> None:
    draw.ellipse(box, fill=colour)


def _square(draw: ImageDraw.ImageDraw, box, colour: RGB, accent: RGB) -> None:
    draw.rectangle(box, fill=colour)


def _triangle(draw: ImageDraw.ImageDraw, box, colour: RGB, accent: RGB) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour, outline=accent, width=3)


def _stripes(draw: ImageDraw.ImageDraw, box, colour: RGB, accent: RGB) -> None:
    x0, y0, x1, y1 = box
    band = max(2.0, (y1 - y0) / 6)
    for i in range(6):
        draw.rectangle((x0, y0 + i * band, x1, y0 + (i + 1) * band), fill=(colour, accent)[i % 2])


def _ring(draw: ImageDraw.ImageDraw, box, colour: RGB, accent: RGB) -> None:
    x0, y0, x1, y1 = box
    inset = (x1 - x0) * 0.3
    draw.ellipse(box, fill=colour)
    draw.ellipse((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=accent)


def _checker(draw: ImageDraw.ImageDraw, box, colour: RGB, accent: RGB) -> None:
    x0, y0, x1, y1 = box
    cell = (x1 - x0) / 4
    for i in range(4):
        for j in range(4):
            fill = (colour, accent)[(i + j) % 2]
            draw.rectangle((x0 + i * cell, y0 + j * cell, x0 + (i + 1) * cell, y0 + (j + 1) * cell),
                           fill=fill)  # fmt: skip


_SHAPES: dict[str, Callable[..., None]] = {
    "disc": _disc, "square": _square, "triangle": _triangle,
    "stripes": _stripes, "ring": _ring, "checker": _checker,
}  # fmt: skip


def encode(image: Image.Image, image_format: str, quality: int = 85) -> bytes:
    """PNG or JPEG bytes, as a client would upload them."""
    out = io.BytesIO()
    if image_format.upper() in ("JPEG", "JPG"):
        image.save(out, format="JPEG", quality=quality)
    else:
        image.save(out, format=image_format.upper())
    return out.getvalue()
