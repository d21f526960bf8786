"""Memory layouts of (N, C, H, W) maps, shared by the ops, their fake implementations and the kernels.

A map is channels_last when its strides say so and it is not also plain contiguous (a map with
C == 1 or H == W == 1 is both; it counts as contiguous). Outputs of the fusion ops take the layout
of their reference input by this rule, on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def memory_format_of(t: Tensor) -> torch.memory_format:
    """channels_last when ``t`` is laid out so (and not also plain contiguous), else contiguous."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def empty_like_layout(ref: Tensor, shape: Sequence[int]) -> Tensor:
    """An uninitialised tensor of ``shape`` with ref's dtype, device and memory format."""
    return torch.empty(tuple(shape), dtype=ref.dtype, device=ref.device, memory_format=memory_format_of(ref))


def dense(maps: Sequence[Tensor], fmt: torch.memory_format) -> list[Tensor]:
    """Every map dense in ``fmt`` (a copy only for maps that are not already)."""
    return [t.contiguous(memory_format=fmt) for t in maps]


def weight_layout(weight: Tensor) -> Tensor:
    """``weight`` (C_out, C_in, k, k) with (k, k, C_in, C_out) memory, the layout the fused
    ``fusion_branch`` kernels read without a copy (a view when it is already so)."""
    return weight.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)
