"""Shared pieces of the Triton kernels: tiles over (N, C, H, W) maps, the index math of
``F.interpolate(size=...)``, and the adjoint of interpolation (the backward of every low-res input).

Index math, one axis at a time, exactly as PyTorch computes it (fp32, also for fp16/bf16 maps):

    nearest:  src = min(floor(dst * scale), in - 1)             scale = in / out
    bilinear: s = scale * dst                (align_corners)    scale = (in - 1) / (out - 1), 0 if out == 1
              s = max(scale * (dst + 0.5) - 0.5, 0)  (else)     scale = in / out
              i0 = floor(s), i1 = i0 + (i0 < in - 1), weights (1 - l, l) with l = s - i0

Tiles: a program owns a [BLOCK_A, BLOCK_B] tile. In channels_last, rows are pixels (n, y, x) and
columns channels, so loads and stores run along contiguous channels; in NCHW, rows are (n, c, y)
image rows and columns x. Either way the kernels see broadcastable index tensors n, c, y, x.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from . import interpreted

# Elements per program of the memory-bound kernels: channels_last tiles load whole channel vectors
# (16 B per access); NCHW tiles gather source pixels one by one, so they take fewer per thread.
TILE_ELEMENTS = {True: 4096, False: 1024}


def in_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` dense in the given layout (a copy only when it is not already)."""
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def axis_scale(in_size: int, out_size: int, bilinear: bool, align_corners: bool) -> float:
    """PyTorch's fp32 source/destination scale of one axis (``area_pixel_compute_scale``)."""
    if bilinear and align_corners:
        return float(np.float32(in_size - 1) / np.float32(out_size - 1)) if out_size > 1 else 0.0
    return float(np.float32(in_size) / np.float32(out_size))


def source_args(maps, h: int, w: int, bilinear: bool, align_corners: bool) -> tuple[tuple, ...]:
    """(heights, widths, scales along H, scales along W) of maps interpolated to (h, w): kernel args."""
    return (
        tuple(t.shape[2] for t in maps),
        tuple(t.shape[3] for t in maps),
        tuple(axis_scale(t.shape[2], h, bilinear, align_corners) for t in maps),
        tuple(axis_scale(t.shape[3], w, bilinear, align_corners) for t in maps),
    )


def adjoint_window(in_size: int, out_size: int, bilinear: bool, align_corners: bool) -> tuple[float, int]:
    """(inverse scale, taps): the adjoint visits ``taps`` output indices per input index, starting
    just below the inverse image of its source window (see :func:`first_candidate`); every visited
    index is tested with the forward index math, so the window only has to be a superset."""
    scale = axis_scale(in_size, out_size, bilinear, align_corners)
    if scale == 0.0:  # every output index reads input index 0
        return 0.0, out_size
    inv = float(np.float32(1.0) / np.float32(scale))
    span = 2.0 if bilinear else 1.0  # bilinear: an output index touches input rows i0 and i0 + 1
    return inv, min(math.ceil(span * inv) + 3, out_size)


# Triton's CPU interpreter truncates fp32 -> bf16 (GPUs round to nearest even) and multiplies bf16
# dot operands as raw bits. Under the interpreter only, the helpers below round and upcast by hand.
_FIX_BF16: tl.constexpr = tl.constexpr(interpreted())


@triton.jit
def to_dtype(x, dtype: tl.constexpr):
    """fp32 ``x`` rounded to nearest even in ``dtype`` (the store of every kernel)."""
    if _FIX_BF16 and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        x = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def dot(a, b, acc, PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation."""
    if _FIX_BF16 and a.dtype == tl.bfloat16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=PRECISION)


def check_index_range(*maps: torch.Tensor) -> None:
    """The kernels index pixels (n, y, x) and rows (n, c, y) in int32."""
    for t in maps:
        n, c, h, w = t.shape
        if max(n * h * w, n * c * h) >= 2**31:
            raise ValueError(f"a map of shape {tuple(t.shape)} is too large for the Triton kernels")


def tile_grid(n: int, c: int, h: int, w: int, channels_last: bool) -> tuple[tuple[int, int], int, int]:
    """(grid, BLOCK_A, BLOCK_B) covering an (n, c, h, w) map with tiles of about TILE_ELEMENTS."""
    if channels_last:
        block_b = min(triton.next_power_of_2(c), 64)
        block_a = max(TILE_ELEMENTS[True] // block_b, 16)
        return (triton.cdiv(n * h * w, block_a), triton.cdiv(c, block_b)), block_a, block_b
    block_b = min(triton.next_power_of_2(w), 256)
    block_a = max(TILE_ELEMENTS[False] // block_b, 1)
    return (triton.cdiv(n * c * h, block_a), triton.cdiv(w, block_b)), block_a, block_b


def num_warps(block_a: int, block_b: int) -> int:
    return 8 if block_a * block_b >= 4096 else 4  # 16 elements per thread in channels_last, 8 in NCHW


@triton.jit
def tile(N, C, H, W, CHANNELS_LAST: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """This program's tile of an (N, C, H, W) map: broadcastable index tensors n, c, y, x and the mask."""
    a = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)[:, None]
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)[None, :]
    if CHANNELS_LAST:
        x = a % W
        y = (a // W) % H
        n = a // (W * H)
        c = b
        mask = (a < N * H * W) & (b < C)
    else:
        y = a % H
        c = (a // H) % C
        n = a // (H * C)
        x = b
        mask = (a < N * C * H) & (b < W)
    return n, c, y, x, mask


@triton.jit
def offset(n, c, y, x, C, H, W, CHANNELS_LAST: tl.constexpr):
    """Element offset (int64) of (n, c, y, x) in a dense (N, C, H, W) map of the given layout; the
    pixel or row index (< 2**31, checked by :func:`tile_grid`) is int32, which keeps index math cheap."""
    if CHANNELS_LAST:
        return ((n * H + y) * W + x).to(tl.int64) * C + c
    else:
        return ((n * C + c) * H + y).to(tl.int64) * W + x


@triton.jit
def strided_offset(n, c, y, x, sn, sc, sh, sw):
    """Element offset (int64) of (n, c, y, x) in a map with strides (sn, sc, sh, sw)."""
    return n.to(tl.int64) * sn + c.to(tl.int64) * sc + y * sh + x * sw


@triton.jit
def store(out_ptr, acc, n, c, y, x, sn, sc, sh, sw, mask, RELU: tl.constexpr):
    """out[n, c, y, x] = act(acc), rounded once to out's dtype; out has strides (sn, sc, sh, sw)."""
    if RELU:
        acc = tl.where(acc < 0.0, 0.0, acc)  # NaN stays NaN, as in torch.relu
    tl.store(
        out_ptr + strided_offset(n, c, y, x, sn, sc, sh, sw),
        to_dtype(acc, out_ptr.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def nearest_source(dst, in_size, scale):
    return tl.minimum(tl.floor(dst.to(tl.float32) * scale).to(tl.int32), in_size - 1)


@triton.jit
def linear_source(dst, in_size, scale, ALIGN_CORNERS: tl.constexpr):
    """(i0, i1, w0, w1): the two source indices of a bilinear axis and their weights."""
    if ALIGN_CORNERS:  # noqa: SIM108  (a compile-time branch in the kernel)
        s = scale * dst.to(tl.float32)
    else:
        s = tl.maximum(scale * (dst.to(tl.float32) + 0.5) - 0.5, 0.0)
    i0 = s.to(tl.int32)  # s >= 0: truncation is floor
    i1 = tl.where(i0 < in_size - 1, i0 + 1, i0)
    w1 = s - i0.to(tl.float32)
    return i0, i1, 1.0 - w1, w1


@triton.jit
def interp_load(
    ptr,
    n,
    c,
    y,
    x,
    C,
    h,
    w,
    scale_h,
    scale_w,
    mask,
    BILINEAR: tl.constexpr,
    ALIGN_CORNERS: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
):
    """interp(src)[n, c, y, x] for a dense (N, C, h, w) map ``src`` at ``ptr``: the bilinear blend in
    fp32, the nearest value as stored (exact; no round trip through fp32 before a tensor-core dot)."""
    if BILINEAR:
        y0, y1, wy0, wy1 = linear_source(y, h, scale_h, ALIGN_CORNERS)
        x0, x1, wx0, wx1 = linear_source(x, w, scale_w, ALIGN_CORNERS)
        v00 = tl.load(ptr + offset(n, c, y0, x0, C, h, w, CHANNELS_LAST), mask=mask, other=0.0).to(tl.float32)
        v01 = tl.load(ptr + offset(n, c, y0, x1, C, h, w, CHANNELS_LAST), mask=mask, other=0.0).to(tl.float32)
        v10 = tl.load(ptr + offset(n, c, y1, x0, C, h, w, CHANNELS_LAST), mask=mask, other=0.0).to(tl.float32)
        v11 = tl.load(ptr + offset(n, c, y1, x1, C, h, w, CHANNELS_LAST), mask=mask, other=0.0).to(tl.float32)
        return wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)
    else:
        sy = nearest_source(y, h, scale_h)
        sx = nearest_source(x, w, scale_w)
        return tl.load(ptr + offset(n, c, sy, sx, C, h, w, CHANNELS_LAST), mask=mask, other=0.0)


@triton.jit
def first_candidate(src, inv, BILINEAR: tl.constexpr, ALIGN_CORNERS: tl.constexpr):
    """An output index in [0, first output index that reads input index ``src``] (inv = 1 / scale)."""
    # inverse images of the lowest source index that touches src: src (nearest), src - 1 (bilinear)
    lowest = (1.0 if ALIGN_CORNERS else 0.5) if BILINEAR else 0.0
    shift = -0.5 if BILINEAR and not ALIGN_CORNERS else 0.0
    t = (src.to(tl.float32) - lowest) * inv + shift
    return tl.maximum(tl.floor(t).to(tl.int32) - 1, 0)


@triton.jit
def axis_weight(dst, src, in_size, out_size, scale, BILINEAR: tl.constexpr, ALIGN_CORNERS: tl.constexpr):
    """How much output index ``dst`` reads from input index ``src`` along one axis (0 if dst is outside)."""
    inside = (dst >= 0) & (dst < out_size)
    if BILINEAR:
        i0, i1, w0, w1 = linear_source(dst, in_size, scale, ALIGN_CORNERS)
        wgt = tl.where(i0 == src, w0, 0.0) + tl.where(i1 == src, w1, 0.0)
    else:
        wgt = tl.where(nearest_source(dst, in_size, scale) == src, 1.0, 0.0)
    return tl.where(inside, wgt, 0.0)


@triton.jit
def interp_adjoint_kernel(
    out_ptr,
    g_ptr,
    N,
    C,
    h,
    w,
    G,
    g_channel,
    H,
    W,
    scale_h,
    scale_w,
    inv_h,
    inv_w,
    taps_h,
    taps_w,
    BILINEAR: tl.constexpr,
    ALIGN_CORNERS: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """out[n, c, sy, sx] = sum_{y, x} wy(y, sy) * wx(x, sx) * g[n, g_channel + c, y, x]: a gather,
    so every input pixel sums its own output pixels in a fixed order (deterministic, fp32)."""
    n, c, sy, sx, mask = tile(N, C, h, w, CHANNELS_LAST, BLOCK_A, BLOCK_B)
    y_first = first_candidate(sy, inv_h, BILINEAR, ALIGN_CORNERS)
    x_first = first_candidate(sx, inv_w, BILINEAR, ALIGN_CORNERS)
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.float32)
    for ty in range(taps_h):
        y = y_first + ty
        wy = axis_weight(y, sy, h, H, scale_h, BILINEAR, ALIGN_CORNERS)
        for tx in range(taps_w):
            x = x_first + tx
            wgt = wy * axis_weight(x, sx, w, W, scale_w, BILINEAR, ALIGN_CORNERS)
            hit = mask & (wgt != 0.0)
            g = tl.load(g_ptr + offset(n, g_channel + c, y, x, G, H, W, CHANNELS_LAST), mask=hit, other=0.0)
            acc += wgt * g.to(tl.float32)
    tl.store(
        out_ptr + offset(n, c, sy, sx, C, h, w, CHANNELS_LAST),
        to_dtype(acc, out_ptr.dtype.element_ty),
        mask=mask,
    )


def interp_adjoint(
    out: torch.Tensor, g: torch.Tensor, g_channel: int, mode: str, align_corners: bool, channels_last: bool
) -> None:
    """Write the adjoint of ``interpolate(., g.shape[-2:])`` applied to channels
    ``g_channel : g_channel + out.shape[1]`` of ``g`` into ``out`` (N, C, h, w).

    ``g`` and ``out`` must be dense in the given layout."""
    check_index_range(out, g)
    n, c, h, w = out.shape
    big_h, big_w = g.shape[-2:]
    bilinear = mode == "bilinear"
    inv_h, taps_h = adjoint_window(h, big_h, bilinear, align_corners)
    inv_w, taps_w = adjoint_window(w, big_w, bilinear, align_corners)
    grid, block_a, block_b = tile_grid(n, c, h, w, channels_last)
    interp_adjoint_kernel[grid](
        out,
        g,
        n,
        c,
        h,
        w,
        g.shape[1],
        g_channel,
        big_h,
        big_w,
        axis_scale(h, big_h, bilinear, align_corners),
        axis_scale(w, big_w, bilinear, align_corners),
        inv_h,
        inv_w,
        taps_h,
        taps_w,
        BILINEAR=bilinear,
        ALIGN_CORNERS=align_corners,
        CHANNELS_LAST=channels_last,
        BLOCK_A=block_a,
        BLOCK_B=block_b,
        num_warps=num_warps(block_a, block_b),
    )
