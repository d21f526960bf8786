"""Where the model looks: the image size at each test scale and the sliding windows over it.

Both follow the official Cityscapes test (HRNet-Semantic-Segmentation, ``Cityscapes.multi_scale_inference``
and ``BaseDataset.multi_scale_aug``):

- scale s resizes the image so its long side is ``int(base_size * s + 0.5)`` and its short side keeps
  the aspect ratio, ``int(short * long_new / long + 0.5)`` (``base_size`` 2048 for Cityscapes, the
  images' own long side);
- an image that fits in the crop (1024x2048 for Cityscapes) runs whole; a larger one is covered by
  ``rows x cols`` crop-sized windows, ``rows = ceil((H - crop_h) / stride_h) + 1``, the window of row r
  starting at ``r * stride_h`` and moved back to end inside the image (likewise for columns). The
  official Cityscapes stride is the crop size itself (windows overlap only where the last one is
  moved back); the repository's generic ``BaseDataset`` uses 2/3 of the crop instead.
"""

from __future__ import annotations

import math
from typing import NamedTuple

CITYSCAPES_CROP = (1024, 2048)  # TEST.IMAGE_SIZE [2048, 1024] is width x height
CITYSCAPES_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # the official multi-scale test


class Window(NamedTuple):
    """Rows y0:y1 and columns x0:x1 of an image."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def scaled_size(height: int, width: int, scale: float, base_size: int | None = None) -> tuple[int, int]:
    """The (height, width) an image is resized to at test ``scale``; ``base_size`` None means the
    image's own long side (scale 1 keeps the image as it is)."""
    long_side = max(height, width)
    new_long = int((long_side if base_size is None else base_size) * scale + 0.5)
    if height > width:
        return new_long, max(1, int(width * new_long / height + 0.5))
    return max(1, int(height * new_long / width + 0.5)), new_long


def _starts(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    if size <= crop:
        return [(0, size)]
    count = math.ceil((size - crop) / stride) + 1  # only the last window is moved back
    ends = [min(k * stride + crop, size) for k in range(count)]
    return [(end - crop, end) for end in ends]


def crop_windows(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int] | None = None) -> list[Window]:
    """The windows covering a ``height`` x ``width`` image: the whole image when it fits in ``crop``,
    else crop-sized windows ``stride`` apart (default: the crop, as the official Cityscapes test)."""
    stride = crop if stride is None else stride
    if min(*crop, *stride) < 1:
        raise ValueError(f"crop and stride must be positive, got crop {crop} and stride {stride}")
    rows = _starts(height, crop[0], stride[0])
    cols = _starts(width, crop[1], stride[1])
    return [Window(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]
