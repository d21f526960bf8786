"""Person boxes (x, y, w, h) to the official crop parameters: a center and a scale.

For a box and the model's aspect ratio r = input width / input height (0.75 for 256x192):

    center = (x + w/2, y + h/2)
    (w, h) grows in one direction until w / h = r   (w = h*r if w < h*r, else h = w/r)
    scale  = 1.25 * (w, h) / 200                    (1.25 padding; 200 is the official pixel_std)

so the crop covers 250 * scale pixels of the image per 1.25 box, with the box centred in it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import PoseInputError

PIXEL_STD = 200.0
BOX_PADDING = 1.25


def box_to_center_scale(boxes: Tensor, aspect_ratio: float, padding: float = BOX_PADDING) -> tuple[Tensor, Tensor]:
    """Boxes (N, 4) as x, y, w, h -> center (N, 2) and scale (N, 2) in units of 200 pixels."""
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise PoseInputError(f"boxes must have shape (N, 4) as x, y, w, h; got {tuple(boxes.shape)}")
    x, y, w, h = boxes.unbind(1)
    center = torch.stack((x + w * 0.5, y + h * 0.5), dim=1)
    w_fit = torch.where(w < aspect_ratio * h, h * aspect_ratio, w)
    h_fit = torch.where(w > aspect_ratio * h, w / aspect_ratio, h)
    scale = torch.stack((w_fit, h_fit), dim=1) * (padding / PIXEL_STD)
    return center, scale


def check_boxes(boxes: Tensor, width: int, height: int, where: str) -> None:
    """Raise a :class:`PoseInputError` naming ``where`` for a box (x, y, w, h) that is not finite, has
    no area, or lies wholly outside the ``width`` x ``height`` image."""
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise PoseInputError(f"{where}: boxes must have shape (N, 4) as x, y, w, h; got {tuple(boxes.shape)}")
    x, y, w, h = boxes.unbind(1)
    bad = ~torch.isfinite(boxes).all(1) | (w <= 0) | (h <= 0)
    outside = (x >= width) | (y >= height) | (x + w <= 0) | (y + h <= 0)
    for reason, mask in (
        ("has no area or is not finite", bad),
        (f"lies outside the {width}x{height} image", outside),
    ):
        if mask.any():
            box = [round(v, 2) for v in boxes[mask.nonzero()[0, 0]].tolist()]
            raise PoseInputError(f"{where}: box {box} (x, y, w, h) {reason}")
