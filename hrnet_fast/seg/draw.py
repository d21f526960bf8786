"""Pictures of label maps: palettes, the label-map PNG (class ids as palette indices), colour overlays.

A label map is saved as an 8-bit palette ("P") PNG: its pixel values are the class ids themselves
(``numpy.array(Image.open(path))`` gives them back) and image viewers show them in the palette's
colours. Class counts above 256 do not fit an 8-bit PNG and are refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import cityscapes
from .errors import SegInputError

Palette = Sequence[tuple[int, int, int]]
MAX_CLASSES = 256


def bit_spread_palette(n: int) -> list[tuple[int, int, int]]:
    """The palette the official code saves other datasets' predictions with (PASCAL VOC's): the bits
    of class k, three at a time, fill red, green and blue from their highest bit down (0 is black)."""
    colours = []
    for k in range(n):
        rgb, code, bit = [0, 0, 0], k, 7
        while code:
            for c in range(3):
                rgb[c] |= ((code >> c) & 1) << bit
            code >>= 3
            bit -= 1
        colours.append((rgb[0], rgb[1], rgb[2]))
    return colours


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Cityscapes' colours for 19 classes, :func:`bit_spread_palette` for any other count."""
    if num_classes == cityscapes.NUM_CLASSES:
        return list(cityscapes.PALETTE)
    return bit_spread_palette(num_classes)


def read_palette(path: str | os.PathLike, num_classes: int) -> list[tuple[int, int, int]]:
    """A palette from a JSON file holding a list of [r, g, b] colours (0-255), one per class at least."""
    try:
        with open(path) as f:
            colours = json.load(f)
    except FileNotFoundError:
        raise SegInputError(f"palette file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise SegInputError(f"could not read palette {path}: {exc}") from None
    valid = isinstance(colours, list) and all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colours
    )
    if not valid:
        raise SegInputError(f"palette {path} must be a JSON list of [r, g, b] colours with values 0-255")
    if len(colours) < num_classes:
        raise SegInputError(f"palette {path} has {len(colours)} colours but the model predicts {num_classes} classes")
    return [tuple(c) for c in colours]


def _flat(palette: Palette) -> list[int]:
    return [v for colour in palette[:MAX_CLASSES] for v in colour]


def label_image(labels: Tensor, palette: Palette) -> Image.Image:
    """Class ids (H, W), integers below 256 -> a "P" image whose pixel values are the ids."""
    if labels.dim() != 2:
        raise ValueError(f"a label map is (H, W), got shape {tuple(labels.shape)}")
    if int(labels.max()) >= MAX_CLASSES or int(labels.min()) < 0:
        raise ValueError(f"class ids must lie in 0-{MAX_CLASSES - 1} to be saved as an 8-bit PNG")
    image = Image.fromarray(labels.to(device="cpu", dtype=torch.uint8).numpy())
    image.putpalette(_flat(palette))  # an "L" image becomes "P", its values unchanged
    return image


def overlay(image: Tensor, labels: Tensor, palette: Palette, alpha: float = 0.5) -> Image.Image:
    """An RGB picture of ``image`` (3, H, W) uint8 with each pixel's class colour blended in at ``alpha``;
    pixels whose id has no colour (e.g. 255, ignored) are left as they are."""
    if image.shape[-2:] != labels.shape:
        raise ValueError(f"image {tuple(image.shape[-2:])} and label map {tuple(labels.shape)} differ in size")
    colours = torch.tensor(np.array(palette[:MAX_CLASSES], dtype=np.float32))
    ids = labels.to(device="cpu", dtype=torch.long)
    coloured = ids < len(colours)
    rgb = image.to("cpu").permute(1, 2, 0).float()
    rgb[coloured] = (1 - alpha) * rgb[coloured] + alpha * colours[ids[coloured]]
    return Image.fromarray(rgb.round().clamp(0, 255).to(torch.uint8).numpy())
