"""Triton kernels of the ops ``upsample_concat`` and ``upsample_concat_backward`` (schemas and math
in ``hrnet_fast/ops/upsample_concat_op.py``): every branch interpolated to the first one's size,
written straight into its channel slice of the concatenated output, in one launch.

    forward:  out[:, o_k : o_k + C_k] = interp(xs[k], size=(H, W))    o_k = C_0 + ... + C_{k-1}
    backward: d xs[0] = grad[:, :C_0];  d xs[k] = interp_adjoint(grad[:, o_k : o_k + C_k])  (interp.py)

:func:`upsample_concat` and :func:`upsample_concat_backward` take the ops' arguments; the
``launch_*`` functions write into given outputs, with inputs dense in the layout of ``xs[0]``;
``out`` may have any strides.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ..layout import dense, empty_like_layout, memory_format_of
from .interp import (
    check_index_range,
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
def upsample_concat_kernel(
    out_ptr,
    out_sn,
    out_sc,
    out_sh,
    out_sw,
    xs,
    channels,
    first_channel,
    heights,
    widths,
    scale_h,
    scale_w,
    N,
    C,
    H,
    W,
    NUM: tl.constexpr,
    BILINEAR: tl.constexpr,
    ALIGN_CORNERS: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """Each element reads the one branch whose channel slice holds it (the other loads are masked off)."""
    n, c, y, x, mask = tile(N, C, H, W, CHANNELS_LAST, BLOCK_A, BLOCK_B)
    in_first = mask & (c < channels[0])
    val = tl.load(xs[0] + offset(n, c, y, x, channels[0], H, W, CHANNELS_LAST), mask=in_first, other=0.0)
    val = val.to(tl.float32)
    for k in tl.static_range(1, NUM):
        ck = c - first_channel[k]
        in_k = mask & (ck >= 0) & (ck < channels[k])
        val += interp_load(
            xs[k],
            n,
            ck,
            y,
            x,
            channels[k],
            heights[k],
            widths[k],
            scale_h[k],
            scale_w[k],
            in_k,
            BILINEAR,
            ALIGN_CORNERS,
            CHANNELS_LAST,
        )
    store(out_ptr, val, n, c, y, x, out_sn, out_sc, out_sh, out_sw, mask, False)


def _first_channels(channels: Sequence[int]) -> tuple[int, ...]:
    firsts, total = [], 0
    for c in channels:
        firsts.append(total)
        total += c
    return tuple(firsts)


def launch_upsample_concat(
    out: torch.Tensor, xs: Sequence[torch.Tensor], mode: str, align_corners: bool, channels_last: bool
) -> None:
    """Write cat([xs[0], interp(xs[1]), ...], dim=1) into ``out`` (any strides), one launch.

    Every ``xs[k]`` must be dense in the given layout."""
    check_index_range(out, *xs)
    n, total, h, w = out.shape
    bilinear = mode == "bilinear"
    channels = tuple(x.shape[1] for x in xs)
    grid, block_a, block_b = tile_grid(n, total, h, w, channels_last)
    upsample_concat_kernel[grid](
        out,
        *out.stride(),
        tuple(xs),
        channels,
        _first_channels(channels),
        *source_args(xs, h, w, bilinear, align_corners),
        n,
        total,
        h,
        w,
        NUM=len(xs),
        BILINEAR=bilinear,
        ALIGN_CORNERS=align_corners,
        CHANNELS_LAST=channels_last,
        BLOCK_A=block_a,
        BLOCK_B=block_b,
        num_warps=num_warps(block_a, block_b),
    )


def launch_upsample_concat_backward(
    grads: Sequence[torch.Tensor], grad: torch.Tensor, mode: str, align_corners: bool, channels_last: bool
) -> None:
    """Write the gradient of each input into ``grads[k]``: the first input's channel slice as is,
    every other one through the adjoint of its interpolation.

    ``grad`` and every ``grads[k]`` must be dense in the given layout."""
    firsts = _first_channels([g.shape[1] for g in grads])
    grads[0].copy_(grad[:, : grads[0].shape[1]])
    for g_k, first in zip(grads[1:], firsts[1:], strict=True):
        interp_adjoint(g_k, grad, first, mode, align_corners, channels_last)


def upsample_concat(xs, mode: str, align_corners: bool) -> torch.Tensor:
    """The op ``upsample_concat``: inputs made dense in xs[0]'s layout (a copy only for mixed layouts)."""
    fmt = memory_format_of(xs[0])
    n, _, h, w = xs[0].shape
    out = empty_like_layout(xs[0], (n, sum(x.shape[1] for x in xs), h, w))
    launch_upsample_concat(out, dense(xs, fmt), mode, align_corners, fmt == torch.channels_last)
    return out


def upsample_concat_backward(grad, channels, hw, mode: str, align_corners: bool) -> list[torch.Tensor]:
    """The op ``upsample_concat_backward``: the gradient of each input, in grad's layout."""
    fmt = memory_format_of(grad)
    n = grad.shape[0]
    grads = [empty_like_layout(grad, (n, c, hw[2 * k], hw[2 * k + 1])) for k, c in enumerate(channels)]
    launch_upsample_concat_backward(
        grads, grad.contiguous(memory_format=fmt), mode, align_corners, fmt == torch.channels_last
    )
    return grads
