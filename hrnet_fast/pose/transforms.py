"""Affine maps between image pixels and crop (or heatmap) pixels, and the batched crop itself.

Pixel coordinates put pixel centres on integers (OpenCV's convention, which the official code uses).
The official ``get_affine_transform(center, scale, rot=0, output_size=(w, h))`` maps a point p of
the image to

    q = s * (p - center) + (w/2, h/2),    s = w / (200 * scale_x)

(only the scale's x component sets s; boxes from :func:`box_to_center_scale` already have the output's
aspect ratio). Crops use it for the input size, decoding inverts it for the heatmap size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import PIXEL_STD


def crop_matrices(center: Tensor, scale: Tensor, output_size: tuple[int, int]) -> Tensor:
    """Center (N, 2), scale (N, 2), output (height, width) -> matrices (N, 2, 3) from image to output."""
    out_h, out_w = output_size
    s = out_w / (PIXEL_STD * scale[:, 0])
    zero = torch.zeros_like(s)
    row_x = torch.stack((s, zero, out_w * 0.5 - s * center[:, 0]), dim=1)
    row_y = torch.stack((zero, s, out_h * 0.5 - s * center[:, 1]), dim=1)
    return torch.stack((row_x, row_y), dim=1)


def invert_affine(matrices: Tensor) -> Tensor:
    """(N, 2, 3) affine maps -> their inverses (N, 2, 3)."""
    linear_inv = torch.linalg.inv(matrices[:, :, :2])
    return torch.cat((linear_inv, -linear_inv @ matrices[:, :, 2:]), dim=2)


def apply_affine(points: Tensor, matrices: Tensor) -> Tensor:
    """Points (N, K, 2) mapped by matrices (N, 2, 3): q = A p + t, shape (N, K, 2)."""
    return points @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]


def _pixel_to_normalized(width: int, height: int, like: Tensor) -> Tensor:
    """The (3, 3) map from pixel coordinates to grid_sample's [-1, 1] with align_corners=False."""
    return like.new_tensor([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0, 0, 1]])


def affine_crop(image: Tensor, matrices: Tensor, output_size: tuple[int, int]) -> Tensor:
    """Warp one image (C, H, W) by each matrix (N, 2, 3) into crops (N, C, out_h, out_w).

    Output pixel q samples the image at M^-1 q bilinearly, with zeros outside the image: the
    result of OpenCV's ``warpAffine(image, M, (out_w, out_h), flags=INTER_LINEAR)`` (constant zero
    border) computed in floating point (OpenCV itself rounds coordinates to 1/32 pixel and, on uint8
    images, the result to integers).
    """
    out_h, out_w = output_size
    height, width = image.shape[-2:]
    n = matrices.shape[0]
    m = matrices.to(torch.float64)
    bottom = m.new_tensor([0.0, 0.0, 1.0]).expand(n, 1, 3)
    output_from_image = torch.cat((m, bottom), dim=1)
    theta = (
        _pixel_to_normalized(width, height, m)
        @ torch.linalg.inv(output_from_image)
        @ torch.linalg.inv(_pixel_to_normalized(out_w, out_h, m))
    )
    grid = F.affine_grid(theta[:, :2].to(image.dtype), [n, image.shape[0], out_h, out_w], align_corners=False)
    return F.grid_sample(
        image.expand(n, *image.shape), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
