"""``winograd_conv``: a 3x3 convolution (stride 1, padding 1) with its epilogue, by Winograd's
F(2x2, 3x3) algorithm, for inference with BatchNorm folded into the weights.

    out = act(conv2d(x, weight, stride=1, padding=1) + bias + residual)

x: (N, C_in, H, W); weight: (C_out, C_in, 3, 3); bias: (C_out,); residual: None or (N, C_out, H, W);
act is ReLU or the identity; out: (N, C_out, H, W), channels_last. ``panel`` is
``winograd_panel(weight)``, the transformed weights the kernels read (the reference reads ``weight``).

Per 2x2 output tile, with d the 4x4 input patch under it (zeros outside the map),

    out_tile = A^T [ sum_ci U[:, :, ci, co] (.) (B^T d[ci] B) ] A,    U = G weight G^T,

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],   A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]:

16 multiplies per tile and channel pair where the direct conv does 36 (2.25x fewer), in the
accumulation type (fp32, fp64 for float64; 16-bit inputs are widened), rounded once. The fp32 error
is that of the direct conv or less (the transforms add and subtract, U is computed in float64).
The subtractions also mean that an infinite input makes some of the outputs whose 3x3 window holds
it NaN (inf - inf) where the direct conv gives +-inf (after ReLU: NaN where it gives 0), and that
fp32/bf16 inputs above a quarter of the float maximum (~8.5e37) can overflow where the direct conv
does not; NaN inputs spread as in the direct conv.

Inference only: the op has no gradient (its autograd formula raises). Kernels:
``csrc/cpu/winograd_conv_kernel.cpp`` (C++, CPU); elsewhere the reference runs. Used by
:class:`hrnet_fast.nn.FoldedConv` (``optimize()``) for the 3x3 stride-1 convs of HRNet's blocks on a
CPU. Tests: ``tests/test_winograd_conv.py``. Benchmark: ``benchmarks/bench_ops.py``
(``test_winograd_conv``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_feature_maps
from .registry import Autograd, OpSpec, define_op, kernel, resolve_backend

SCHEMA = "(Tensor x, Tensor weight, Tensor panel, Tensor bias, Tensor? residual, bool relu) -> Tensor"
PANEL_ALIGN = 32  # output channels of a panel, padded with zeros to a multiple of this
PANEL_BLOCK_BYTES = 64  # output channels of a panel go in blocks of one cache line

_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def panel_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the transformed weights (the kernels' accumulation type) for maps of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def panel_shape(c_out: int, c_in: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """The shape of :func:`winograd_panel` for a (c_out, c_in, 3, 3) weight of ``dtype``:
    (C_pad / B, 16, c_in, B), C_pad = c_out padded to a multiple of PANEL_ALIGN, B the output
    channels of one 64-byte line (16 in float32, 8 in float64)."""
    block = PANEL_BLOCK_BYTES // panel_dtype(dtype).itemsize
    return -(-c_out // PANEL_ALIGN) * PANEL_ALIGN // block, 16, c_in, block


def winograd_panel(weight: Tensor) -> Tensor:
    """The transformed weights of a (C_out, C_in, 3, 3) ``weight``: U = G weight G^T, computed in
    float64 and rounded once to :func:`panel_dtype`, output channels padded with zeros to C_pad and
    cut into blocks of B (:func:`panel_shape`): ``panel[co // B, xi, ci, co % B]`` is element
    xi = 4 * row + column of U's 4x4 tile for (co, ci). Each block's rows (one per xi and input
    channel) are one cache line each and contiguous: the CPU kernel's register tile streams them."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"winograd_panel: weight must be (C_out, C_in, 3, 3), got {tuple(weight.shape)}")
    c_out, c_in = weight.shape[:2]
    blocks, _, _, block = panel_shape(c_out, c_in, weight.dtype)
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ak,oikl,bl->abio", g, weight.detach().double(), g).reshape(16, c_in, c_out)
    u = F.pad(u, (0, blocks * block - c_out)).view(16, c_in, blocks, block).permute(2, 0, 1, 3)
    return u.to(panel_dtype(weight.dtype)).contiguous()


def winograd_conv_reference(
    x: Tensor, weight: Tensor, panel: Tensor, bias: Tensor, residual: Tensor | None, relu: bool
) -> Tensor:
    """The direct composition (``panel`` unused), channels_last like the kernels' output."""
    out = F.conv2d(x, weight, bias, 1, 1)
    if residual is not None:
        out = out + residual
    out = torch.relu(out) if relu else out
    return out.contiguous(memory_format=torch.channels_last)


def _fake(x, weight, panel, bias, residual, relu):
    n, _, h, w = x.shape
    return x.new_empty((n, weight.shape[0], h, w)).contiguous(memory_format=torch.channels_last)


def _no_backward(ops, ctx, grad):
    raise RuntimeError("winograd_conv is inference-only and has no gradient; train with nn.Conv2d")


define_op(OpSpec("winograd_conv", SCHEMA, winograd_conv_reference, _fake, Autograd(_no_backward)))


def check_winograd_conv(x: Tensor, weight: Tensor, panel: Tensor, bias: Tensor, residual: Tensor | None) -> None:
    """One-line errors for operands the op cannot take (shapes, dtypes, devices)."""
    check_feature_maps("winograd_conv", [("x", x)] + ([("residual", residual)] if residual is not None else []))
    n, c_in, h, w = x.shape
    c_out = weight.shape[0] if weight.dim() == 4 else -1
    expected = [
        ("weight", weight, (c_out, c_in, 3, 3), x.dtype),
        ("bias", bias, (c_out,), x.dtype),
        ("panel", panel, panel_shape(c_out, c_in, x.dtype), panel_dtype(x.dtype)),
    ]
    if residual is not None:
        expected.append(("residual", residual, (n, c_out, h, w), x.dtype))
    for name, t, shape, dtype in expected:
        if not isinstance(t, Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"winograd_conv: {name} must have shape {shape}, got {got}")
        if t.dtype != dtype or t.device != x.device:
            raise TypeError(f"winograd_conv: {name} must be {dtype} on {x.device}, got {t.dtype} on {t.device}")


def winograd_conv(
    x: Tensor,
    weight: Tensor,
    panel: Tensor,
    bias: Tensor,
    *,
    residual: Tensor | None = None,
    relu: bool = True,
    backend: str | None = None,
) -> Tensor:
    """``act(conv2d(x, weight, padding=1) + bias + residual)`` (see the module docstring), with
    ``panel = winograd_panel(weight)``; ``backend`` overrides the global choice. Backends without a
    kernel for these inputs run :func:`winograd_conv_reference`."""
    check_winograd_conv(x, weight, panel, bias, residual)
    run = kernel("winograd_conv", resolve_backend(backend, x.device), x)
    return run(x, weight, panel, bias, residual, relu)
