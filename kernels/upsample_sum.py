"""Triton kernels of the ops ``upsample_sum`` and ``upsample_sum_backward`` (level 1 of the fusion
step; schemas and math in ``hrnet_fast/ops/upsample_sum_op.py``).

    forward:  out = act(base + sum_k same[k] + sum_k interp(low[k], size=(H, W)))   one launch
    backward: g_m = grad * (out > 0) (ReLU) or grad;   d low[k] = interp_adjoint(g_m)  (interp.py)

:func:`upsample_sum` and :func:`upsample_sum_backward` take the ops' arguments (the triton backend
registers them as the ops' kernels); the ``launch_*`` functions below them write into given outputs,
with every map dense in the layout of ``base`` (NCHW or channels_last); outputs may have any strides.
Accumulation is fp32 and the result is rounded once to the maps' dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ..layout import dense, empty_like_layout, memory_format_of
from .interp import (
    check_index_range,
    in_layout,
    interp_adjoint,
    interp_load,
    num_warps,
    offset,
    source_args,
    store,
    tile,
    tile_grid,
)


@triton.jit
def upsample_sum_kernel(
    out_ptr,
    out_sn,
    out_sc,
    out_sh,
    out_sw,
    base_ptr,
    same,
    low,
    low_h,
    low_w,
    scale_h,
    scale_w,
    N,
    C,
    H,
    W,
    NUM_SAME: tl.constexpr,
    NUM_LOW: tl.constexpr,
    BILINEAR: tl.constexpr,
    ALIGN_CORNERS: tl.constexpr,
    RELU: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    n, c, y, x, mask = tile(N, C, H, W, CHANNELS_LAST, BLOCK_A, BLOCK_B)
    at = offset(n, c, y, x, C, H, W, CHANNELS_LAST)
    acc = tl.load(base_ptr + at, mask=mask, other=0.0).to(tl.float32)
    for k in tl.static_range(NUM_SAME):
        acc += tl.load(same[k] + at, mask=mask, other=0.0).to(tl.float32)
    for k in tl.static_range(NUM_LOW):
        acc += interp_load(
            low[k],
            n,
            c,
            y,
            x,
            C,
            low_h[k],
            low_w[k],
            scale_h[k],
            scale_w[k],
            mask,
            BILINEAR,
            ALIGN_CORNERS,
            CHANNELS_LAST,
        )
    store(out_ptr, acc, n, c, y, x, out_sn, out_sc, out_sh, out_sw, mask, RELU)


@triton.jit
def relu_grad_kernel(
    out_ptr,
    out_sn,
    out_sc,
    out_sh,
    out_sw,
    grad_ptr,
    y_ptr,
    N,
    C,
    H,
    W,
    RELU: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """out = grad * (y > 0) under ReLU, else grad (y: the forward output)."""
    n, c, yy, x, mask = tile(N, C, H, W, CHANNELS_LAST, BLOCK_A, BLOCK_B)
    at = offset(n, c, yy, x, C, H, W, CHANNELS_LAST)
    g = tl.load(grad_ptr + at, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        g = g * (tl.load(y_ptr + at, mask=mask, other=0.0).to(tl.float32) > 0).to(tl.float32)
    store(out_ptr, g, n, c, yy, x, out_sn, out_sc, out_sh, out_sw, mask, False)


def launch_upsample_sum(
    out: torch.Tensor,
    base: torch.Tensor,
    same: Sequence[torch.Tensor],
    low: Sequence[torch.Tensor],
    mode: str,
    align_corners: bool,
    relu: bool,
    channels_last: bool,
) -> None:
    """Write act(base + sum(same) + sum(interp(low))) into ``out`` (any strides), one launch.

    ``base``, every ``same[k]`` and every ``low[k]`` must be dense in the given layout."""
    check_index_range(base, *low)
    n, c, h, w = base.shape
    bilinear = mode == "bilinear"
    grid, block_a, block_b = tile_grid(n, c, h, w, channels_last)
    upsample_sum_kernel[grid](
        out,
        *out.stride(),
        base,
        tuple(same),
        tuple(low),
        *source_args(low, h, w, bilinear, align_corners),
        n,
        c,
        h,
        w,
        NUM_SAME=len(same),
        NUM_LOW=len(low),
        BILINEAR=bilinear,
        ALIGN_CORNERS=align_corners,
        RELU=relu,
        CHANNELS_LAST=channels_last,
        BLOCK_A=block_a,
        BLOCK_B=block_b,
        num_warps=num_warps(block_a, block_b),
    )


def launch_upsample_sum_backward(
    grad_base: torch.Tensor,
    grad_low: Sequence[torch.Tensor],
    grad: torch.Tensor,
    out: torch.Tensor,
    mode: str,
    align_corners: bool,
    relu: bool,
    channels_last: bool,
) -> None:
    """Write g_m = grad * (out > 0) (or grad) into ``grad_base`` (any strides) and the adjoint of
    each low input's interpolation, applied to g_m, into ``grad_low[k]``.

    ``grad``, ``out`` and every ``grad_low[k]`` must be dense in the given layout."""
    check_index_range(grad)
    n, c, h, w = grad.shape
    grid, block_a, block_b = tile_grid(n, c, h, w, channels_last)
    relu_grad_kernel[grid](
        grad_base,
        *grad_base.stride(),
        grad,
        out,
        n,
        c,
        h,
        w,
        RELU=relu,
        CHANNELS_LAST=channels_last,
        BLOCK_A=block_a,
        BLOCK_B=block_b,
        num_warps=num_warps(block_a, block_b),
    )
    g_m = in_layout(grad_base, channels_last)  # the adjoint reads a dense map in grad's layout
    for t in grad_low:
        interp_adjoint(t, g_m, 0, mode, align_corners, channels_last)


def upsample_sum(base, same, low, mode: str, align_corners: bool, relu: bool) -> torch.Tensor:
    """The op ``upsample_sum``: maps made dense in base's layout (a copy only for mixed layouts)."""
    fmt = memory_format_of(base)
    maps = dense([base, *same, *low], fmt)
    out = torch.empty_like(base)
    channels_last = fmt == torch.channels_last
    launch_upsample_sum(
        out, maps[0], maps[1 : 1 + len(same)], maps[1 + len(same) :], mode, align_corners, relu, channels_last
    )
    return out


def upsample_sum_backward(grad, out, low_hw, mode: str, align_corners: bool, relu: bool):
    """The op ``upsample_sum_backward``: (g_m, [d low[k]]) in grad's layout."""
    fmt = memory_format_of(grad)
    grad, out = dense([grad, out], fmt)
    n, c = grad.shape[:2]
    grad_base = torch.empty_like(grad)
    grad_low = [empty_like_layout(grad, (n, c, *low_hw[k : k + 2])) for k in range(0, len(low_hw), 2)]
    launch_upsample_sum_backward(grad_base, grad_low, grad, out, mode, align_corners, relu, fmt == torch.channels_last)
    return grad_base, grad_low
