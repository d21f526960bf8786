"""Skeleton drawings with Pillow: limbs as lines, joints as dots, one colour per person."""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from .skeleton import SKELETON

if TYPE_CHECKING:
    from torch import Tensor

KEYPOINT_THRESHOLD = 0.3


def person_colour(k: int) -> tuple[int, int, int]:
    """A bright colour for person k, spread around the hue circle by the golden ratio."""
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def joints_in_image(keypoints: Tensor, threshold: float, width: int, height: int) -> Tensor:
    """(K, J) bool: the joints of ``keypoints`` (K, J, 3: x, y, score) that a drawing shows, those
    scoring above ``threshold`` with 0 <= x < width and 0 <= y < height."""
    x, y, score = keypoints.unbind(-1)
    return (score > threshold) & (x >= 0) & (x < width) & (y >= 0) & (y < height)


def draw_poses(
    image: Image.Image, keypoints: Tensor, threshold: float = KEYPOINT_THRESHOLD, skeleton=SKELETON
) -> Image.Image:
    """A copy of ``image`` with each person's keypoints (K, J, 3: x, y, score) drawn: the joints scoring
    above ``threshold`` as dots, and the limbs between two such joints as lines."""
    out = image.convert("RGB")
    pen = ImageDraw.Draw(out)
    size = max(2, round(max(out.size) / 200))
    for k, person in enumerate(keypoints.tolist()):
        colour = person_colour(k)
        shown = [score > threshold for _, _, score in person]
        for a, b in skeleton:
            if shown[a] and shown[b]:
                pen.line((*person[a][:2], *person[b][:2]), fill=colour, width=size)
        for (x, y, _), visible in zip(person, shown, strict=True):
            if visible:
                pen.ellipse((x - size, y - size, x + size, y + size), fill=colour, outline=(0, 0, 0))
    return out
