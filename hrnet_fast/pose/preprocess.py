"""Images in, model inputs out: Pillow reading (with bounded prefetch), person crops, ImageNet normalization.

As in the official pipeline, images are read as RGB without applying EXIF orientation, each person
box becomes a center/scale (:mod:`.boxes`), the crop is an affine warp to the model's input size
(:mod:`.transforms`), and pixels x are normalized to (x / 255 - mean) / std with ImageNet's statistics.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .boxes import box_to_center_scale
from .errors import PoseInputError
from .transforms import affine_crop, crop_matrices

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(PoseInputError):
    """An image file is missing or could not be decoded."""


def read_image(path: str | os.PathLike) -> Tensor:
    """An image file -> uint8 tensor (3, H, W), RGB, as stored (EXIF orientation not applied)."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"could not decode image {path}: {exc}") from None
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


def read_images(paths: Iterable, workers: int = 4) -> Iterator[tuple[object, Tensor | ImageReadError]]:
    """(key, path) pairs -> (key, image or the ImageReadError), in order, decoding ahead on threads.

    At most ``2 * workers`` images are decoded ahead, so memory stays bounded on any dataset size.
    """
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ahead: deque = deque()

        def result(future):
            try:
                return future.result()
            except ImageReadError as exc:
                return exc

        for key, path in paths:
            ahead.append((key, pool.submit(read_image, path)))
            if len(ahead) >= 2 * max(1, workers):
                k, fut = ahead.popleft()
                yield k, result(fut)
        while ahead:
            k, fut = ahead.popleft()
            yield k, result(fut)


def person_crops(
    image: Tensor, boxes: Tensor, input_size: tuple[int, int], dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    """One image (3, H, W) uint8 and its person boxes (N, 4) xywh -> model inputs (N, 3, h, w) in
    ``dtype``, centers (N, 2) and scales (N, 2), all on the image's device.

    The inputs are (crop / 255 - mean) / std, computed as crop(image / (255 std)) - mean / std: the
    crop is linear and its zero border stays black, and the small image is scaled instead of the
    larger batch of crops.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise PoseInputError(f"an image must be a (3, H, W) RGB tensor, got shape {tuple(image.shape)}")
    height, width = input_size
    boxes = boxes.to(device=image.device, dtype=torch.float32)
    center, scale = box_to_center_scale(boxes, width / height)
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    crops = affine_crop(image / (255.0 * std), crop_matrices(center, scale, input_size), input_size)
    return (crops - mean / std).to(dtype), center, scale
