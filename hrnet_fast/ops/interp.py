"""Interpolation as the ops define it (``F.interpolate(size=...)``) and its adjoint."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def interpolate(x: Tensor, size: Sequence[int], mode: str, align_corners: bool) -> Tensor:
    """(N, C, h, w) -> (N, C, *size) exactly as ``F.interpolate(x, size=size, mode=mode, ...)``."""
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=align_corners if mode == "bilinear" else None)


def interpolate_adjoint(grad: Tensor, in_hw: Sequence[int], mode: str, align_corners: bool) -> Tensor:
    """The transpose of :func:`interpolate`: (N, C, H, W) -> (N, C, *in_hw), scatter-adding each
    output gradient back onto the input pixels (with their bilinear weights) that produced it."""
    out_hw = list(grad.shape[-2:])
    in_size = [grad.shape[0], grad.shape[1], *in_hw]
    if mode == "nearest":
        return torch.ops.aten.upsample_nearest2d_backward(grad, out_hw, in_size)
    return torch.ops.aten.upsample_bilinear2d_backward(grad, out_hw, in_size, align_corners)
