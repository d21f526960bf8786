"""``upsample_sum``: the sum-and-ReLU at the heart of HRNet's multi-resolution fusion (level 1).

    out = act(base + sum_k same[k] + sum_k interp(low[k], size=base.shape[-2:], mode, align_corners))

base: (N, C, H, W); each same[k]: (N, C, H, W); each low[k]: (N, C, h_k, w_k) at any size; act is
ReLU or the identity; ``interp`` is exactly ``F.interpolate(size=...)``, so sizes need not divide
(250x190 inputs happen). For output branch i of a fusion step, base is branch i itself, ``same`` the
strided-conv paths from the higher-resolution branches and ``low`` the 1x1-conv projections of the
lower-resolution ones. ``out`` has base's dtype, device and memory format.

Backward, with g the output gradient and m = (out > 0) under ReLU (else 1), is the op
``upsample_sum_backward``:
    d base = d same[k] = g * m,      d low[k] = interp_adjoint(g * m, (h_k, w_k))
It is linear in g, so its own derivative (double backward) is a forward-shaped op: for cotangents
(gg, gg_low[k]) of its outputs, d g = m * (gg + sum_k interp(gg_low[k])) = m * upsample_sum(gg, [],
gg_low, relu=False); ``out`` only selects m, which is piecewise constant, so it gets no gradient.

Kernels: ``kernels/upsample_sum.py`` (Triton), ``csrc/cpu/upsample_sum_kernel.cpp`` and
``csrc/cuda/upsample_sum_kernel.cu(h)`` (C++). Tests: ``tests/test_ops.py`` (the math),
``tests/test_op_gradients.py``, ``tests/test_triton_upsample_sum.py``, ``tests/test_cpp_ops.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..layout import empty_like_layout
from .autocast import promote
from .checks import check_feature_maps, check_mode
from .interp import interpolate, interpolate_adjoint
from .registry import Autograd, OpSpec, define_op, kernel, resolve_backend

SCHEMA = "(Tensor base, Tensor[] same, Tensor[] low, str mode, bool align_corners, bool relu) -> Tensor"
# low_hw = [h_0, w_0, h_1, w_1, ...]: the low inputs' sizes, so backward need not keep them alive.
BACKWARD_SCHEMA = (
    "(Tensor grad, Tensor out, SymInt[] low_hw, str mode, bool align_corners, bool relu) -> (Tensor, Tensor[])"
)


def upsample_sum_reference(
    base: Tensor, same: Sequence[Tensor], low: Sequence[Tensor], mode: str, align_corners: bool, relu: bool
) -> Tensor:
    """The plain PyTorch composition the official repos run (one kernel per add, per interpolate)."""
    out = base
    for t in same:
        out = out + t
    for t in low:
        out = out + interpolate(t, base.shape[-2:], mode, align_corners)
    return torch.relu(out) if relu else out


def _pairs(low_hw: Sequence[int]) -> list[Sequence[int]]:
    return [low_hw[k : k + 2] for k in range(0, len(low_hw), 2)]


def upsample_sum_backward_reference(
    grad: Tensor, out: Tensor, low_hw: Sequence[int], mode: str, align_corners: bool, relu: bool
) -> tuple[Tensor, list[Tensor]]:
    """(g * m, [interp_adjoint(g * m, (h_k, w_k))]) in PyTorch ops; see the module docstring."""
    g = grad * (out > 0) if relu else grad.clone()
    return g, [interpolate_adjoint(g, hw, mode, align_corners) for hw in _pairs(low_hw)]


def _fake(base, same, low, mode, align_corners, relu):
    return torch.empty_like(base)


def _backward_fake(grad, out, low_hw, mode, align_corners, relu):
    n, c = grad.shape[:2]
    return torch.empty_like(grad), [empty_like_layout(grad, (n, c, *hw)) for hw in _pairs(low_hw)]


def _setup_context(ctx, inputs, output):
    _, same, low, mode, align_corners, relu = inputs
    ctx.save_for_backward(output)
    ctx.num_same = len(same)
    ctx.low_hw = [s for t in low for s in t.shape[-2:]]
    ctx.options = (mode, align_corners, relu)


def _backward(ops, ctx, grad):
    (out,) = ctx.saved_tensors
    g, g_low = ops.upsample_sum_backward(grad, out, ctx.low_hw, *ctx.options)
    return g, [g] * ctx.num_same, g_low, None, None, None


def _setup_backward_context(ctx, inputs, output):
    _, out, _, mode, align_corners, relu = inputs
    ctx.save_for_backward(out)
    ctx.options = (mode, align_corners, relu)


def _double_backward(ops, ctx, grad_g, grad_low):
    (out,) = ctx.saved_tensors
    mode, align_corners, relu = ctx.options
    d_grad = ops.upsample_sum(grad_g, [], list(grad_low), mode, align_corners, False)
    return (d_grad * (out > 0) if relu else d_grad), None, None, None, None, None


define_op(
    OpSpec("upsample_sum", SCHEMA, upsample_sum_reference, _fake, Autograd(_backward, _setup_context), autocast=True)
)
define_op(
    OpSpec(
        "upsample_sum_backward",
        BACKWARD_SCHEMA,
        upsample_sum_backward_reference,
        _backward_fake,
        Autograd(_double_backward, _setup_backward_context),
        family="upsample_sum",
    )
)


def upsample_sum(
    base: Tensor,
    same: Sequence[Tensor] = (),
    low: Sequence[Tensor] = (),
    *,
    mode: str = "nearest",
    align_corners: bool = False,
    relu: bool = True,
    backend: str | None = None,
) -> Tensor:
    """Fused ``act(base + sum(same) + sum(upsample(low)))``; see the module docstring for the math.

    ``backend`` overrides the global choice (:func:`hrnet_fast.set_backend`) for this call.
    Returns a new (N, C, H, W) tensor of base's dtype on base's device.
    """
    same, low = list(same), list(low)
    if all(isinstance(t, Tensor) for t in [base, *same, *low]):
        base, *rest = promote([base, *same, *low])
        same, low = rest[: len(same)], rest[len(same) :]
    check_mode(mode, align_corners)
    check_feature_maps(
        "upsample_sum",
        [("base", base)]
        + [(f"same[{k}]", t) for k, t in enumerate(same)]
        + [(f"low[{k}]", t) for k, t in enumerate(low)],
    )
    for k, t in enumerate(same):
        if t.shape != base.shape:
            raise ValueError(f"upsample_sum: same[{k}] has shape {tuple(t.shape)}, base has {tuple(base.shape)}")
    for k, t in enumerate(low):
        if t.shape[1] != base.shape[1]:
            raise ValueError(f"upsample_sum: low[{k}] has {t.shape[1]} channels, base has {base.shape[1]}")
    run = kernel("upsample_sum", resolve_backend(backend, base.device), base)
    out = run(base, same, low, mode, align_corners, relu)
    return out.clone() if out is base else out
