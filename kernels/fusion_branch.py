"""Triton kernel of the op ``fusion_branch`` (level 2; schema and math in
``hrnet_fast/ops/fusion_branch_op.py``): one output branch of the fusion step, fully fused.

    out[p, :] = act( base[p, :] + bias
                   + sum_k sum_{tap, ci} down[k][n, ci, 2y - 1 + ty, 2x - 1 + tx] * Wd_k[tap, ci, :]
                   + sum_k sum_ci interp(low[k])[n, ci, y, x] * Wl_k[ci, :] )

for every output pixel p = (n, y, x). A program owns BLOCK_P pixels x BLOCK_N output channels and
accumulates all paths into one fp32 tile with ``tl.dot``:

- downsample paths (the last stride-2 3x3 conv of a chain) as an implicit GEMM: K = 9 taps x Cd,
  each A tile gathered straight from the input map (padding by masks), B from Wd packed
  (3, 3, Cd, C);
- upsample paths (1x1 projection, then interpolation) by linearity as interp-then-project: the A
  tile is the low-resolution rows of each output pixel's source pixels, blended by the
  interpolation weights (nearest: one row, exact), B from Wl packed (Cl, C). No projected or
  downsampled intermediate goes through device memory; the price is that each low-resolution row
  is projected once per output pixel that reads it (4^(j-i) times for a nearest 2^(j-i) upsample),
  about as many FLOPs as the downsample convs at HRNet's widths (see the README).

fp16/bf16 dots run on tensor cores with fp32 accumulation; fp32 dots use exact fp32 products
(``input_precision="ieee"``), not TF32. The result is rounded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ..layout import dense, memory_format_of, weight_layout
from . import interpreted
from .interp import check_index_range, dot, interp_load, offset, source_args, store


def launch_config(pixels: int, channels: int, element_size: int, bilinear: bool, sm_count: int) -> dict:
    """Tile sizes and pipelining for one branch, chosen for Hopper (no autotuning: a fixed choice
    per shape compiles once and is safe to capture in CUDA graphs).

    BLOCK_N covers the output channels up to 128 (every N tile re-gathers the A rows); BLOCK_P is
    the largest of 128/64/32 pixels that still gives about two waves of programs over the device's
    ``sm_count`` multiprocessors; BLOCK_K = 64 for 16-bit maps read straight into the dot, 32 when
    the A tile is blended in registers (bilinear) or is fp32, which also gets 2 pipeline stages
    instead of 3 to stay within shared memory. ``benchmarks/compile_check.py`` prints the registers
    and shared memory of these choices."""
    if interpreted():  # fewer, larger programs: the interpreter runs them one by one in Python
        return {"BLOCK_P": 128, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 1}
    block_n = min(128, max(16, triton.next_power_of_2(channels)))
    n_tiles = triton.cdiv(channels, block_n)
    block_p = 128
    while block_p > 32 and triton.cdiv(pixels, block_p) * n_tiles < 2 * sm_count:
        block_p //= 2
    light = element_size == 2 and not bilinear
    return {
        "BLOCK_P": block_p,
        "BLOCK_N": block_n,
        "BLOCK_K": 64 if light else 32,
        "num_warps": 8 if block_p * block_n >= 128 * 128 else 4,
        "num_stages": 3 if light else 2,
    }


@triton.jit
def fusion_branch_kernel(
    out_ptr,
    out_sn,
    out_sc,
    out_sh,
    out_sw,
    base_ptr,
    bias_ptr,
    down,
    down_weight,
    down_c,
    down_h,
    down_w,
    low,
    low_weight,
    low_c,
    low_h,
    low_w,
    scale_h,
    scale_w,
    N,
    C,
    H,
    W,
    NUM_DOWN: tl.constexpr,
    NUM_LOW: tl.constexpr,
    BILINEAR: tl.constexpr,
    ALIGN_CORNERS: tl.constexpr,
    RELU: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]  # output pixels
    co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]  # output channels
    kk = tl.arange(0, BLOCK_K)
    x = p % W
    y = (p // W) % H
    n = p // (W * H)
    p_ok = p < N * H * W
    c_ok = co < C
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)

    for k in tl.static_range(NUM_DOWN):
        cin = down_c[k]
        blocks = tl.cdiv(cin, BLOCK_K)
        for t in range(9 * blocks):
            tap = t // blocks
            ci = (t % blocks) * BLOCK_K + kk
            iy = 2 * y - 1 + tap // 3
            ix = 2 * x - 1 + tap % 3
            inside = p_ok & (iy >= 0) & (iy < down_h[k]) & (ix >= 0) & (ix < down_w[k])
            a_at = offset(n, ci[None, :], iy, ix, cin, down_h[k], down_w[k], CHANNELS_LAST)
            a = tl.load(down[k] + a_at, mask=inside & (ci[None, :] < cin), other=0.0)
            b_at = (tap * cin + ci[:, None]) * C + co
            b = tl.load(down_weight[k] + b_at, mask=(ci[:, None] < cin) & c_ok, other=0.0)
            acc = dot(a, b, acc, DOT_PRECISION)

    for k in tl.static_range(NUM_LOW):
        cin = low_c[k]
        for k0 in range(0, cin, BLOCK_K):
            ci = k0 + kk
            rows = interp_load(
                low[k],
                n,
                ci[None, :],
                y,
                x,
                cin,
                low_h[k],
                low_w[k],
                scale_h[k],
                scale_w[k],
                p_ok & (ci[None, :] < cin),
                BILINEAR,
                ALIGN_CORNERS,
                CHANNELS_LAST,
            )
            b = tl.load(low_weight[k] + ci[:, None] * C + co, mask=(ci[:, None] < cin) & c_ok, other=0.0)
            acc = dot(rows.to(b.dtype), b, acc, DOT_PRECISION)

    mask = p_ok & c_ok
    acc += tl.load(bias_ptr + co, mask=c_ok, other=0.0).to(tl.float32)
    acc += tl.load(base_ptr + offset(n, co, y, x, C, H, W, CHANNELS_LAST), mask=mask, other=0.0).to(tl.float32)
    store(out_ptr, acc, n, co, y, x, out_sn, out_sc, out_sh, out_sw, mask, RELU)


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def fusion_branch(
    base, down, down_weight, low, low_weight, bias, mode: str, align_corners: bool, relu: bool
) -> torch.Tensor:
    """The op ``fusion_branch``: maps made dense in base's layout, weights in (k, k, C_in, C_out)
    memory (copies only where they are not), tiles chosen by :func:`launch_config`."""
    fmt = memory_format_of(base)
    maps = dense([base, *down, *low], fmt)
    out = torch.empty_like(base)
    n, c, h, w = base.shape
    meta = launch_config(n * h * w, c, base.element_size(), mode == "bilinear", _sm_count(base.device))
    launch_fusion_branch(
        out,
        maps[0],
        maps[1 : 1 + len(down)],
        [weight_layout(t) for t in down_weight],
        maps[1 + len(down) :],
        [weight_layout(t) for t in low_weight],
        bias.contiguous(),
        mode,
        align_corners,
        relu,
        fmt == torch.channels_last,
        meta,
    )
    return out


def launch_fusion_branch(
    out: torch.Tensor,
    base: torch.Tensor,
    down: Sequence[torch.Tensor],
    down_weight: Sequence[torch.Tensor],
    low: Sequence[torch.Tensor],
    low_weight: Sequence[torch.Tensor],
    bias: torch.Tensor,
    mode: str,
    align_corners: bool,
    relu: bool,
    channels_last: bool,
    meta: dict,
) -> None:
    """Write the fused branch into ``out`` (any strides), one launch with the tiles of ``meta``
    (see :func:`launch_config`).

    Maps must be dense in the given layout, weights (C_out, C_in, k, k) with (k, k, C_in, C_out)
    memory (:func:`hrnet_fast.layout.weight_layout`), bias contiguous."""
    n, c, h, w = base.shape
    bilinear = mode == "bilinear"
    check_index_range(base, *down, *low)
    grid = (triton.cdiv(n * h * w, meta["BLOCK_P"]), triton.cdiv(c, meta["BLOCK_N"]))
    fusion_branch_kernel[grid](
        out,
        *out.stride(),
        base,
        bias,
        tuple(down),
        tuple(down_weight),
        tuple(t.shape[1] for t in down),
        tuple(t.shape[2] for t in down),
        tuple(t.shape[3] for t in down),
        tuple(low),
        tuple(low_weight),
        tuple(t.shape[1] for t in low),
        *source_args(low, h, w, bilinear, align_corners),
        n,
        c,
        h,
        w,
        NUM_DOWN=len(down),
        NUM_LOW=len(low),
        BILINEAR=bilinear,
        ALIGN_CORNERS=align_corners,
        RELU=relu,
        CHANNELS_LAST=channels_last,
        DOT_PRECISION="ieee" if base.dtype == torch.float32 else "tf32",
        **meta,
    )
