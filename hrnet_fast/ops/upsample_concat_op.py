"""``upsample_concat``: every branch interpolated to the first (highest-resolution) branch's size and
concatenated along channels, as the HRNetV2 segmentation head and the V2p neck do.

    out = cat([xs[0], interp(xs[1], size), ..., interp(xs[n-1], size)], dim=1),  size = xs[0].shape[-2:]

xs[k]: (N, C_k, H_k, W_k); out: (N, sum C_k, H_0, W_0) in xs[0]'s memory format. ``interp`` is
``F.interpolate(size=...)``. Backward (the op ``upsample_concat_backward``): split the gradient by
channels; slice k goes through the adjoint of its interpolation (slice 0 straight through). That is
linear in the gradient, and its own derivative is this op again: for cotangents gg[k] of its
outputs, d grad = upsample_concat(gg).

Kernels: ``kernels/upsample_concat.py`` (Triton), ``csrc/cpu/upsample_concat_kernel.cpp`` and
``csrc/cuda/upsample_concat_binding.cpp`` (C++, on the upsample_sum kernels). Tests:
``tests/test_ops.py``, ``tests/test_op_gradients.py``, ``tests/test_triton_upsample_concat.py``,
``tests/test_cpp_ops.py``.
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

SCHEMA = "(Tensor[] xs, str mode, bool align_corners) -> Tensor"
# channels = [C_0, ..., C_{n-1}], hw = [H_0, W_0, H_1, W_1, ...]: the inputs' shapes.
BACKWARD_SCHEMA = "(Tensor grad, SymInt[] channels, SymInt[] hw, str mode, bool align_corners) -> Tensor[]"


def upsample_concat_reference(xs: Sequence[Tensor], mode: str, align_corners: bool) -> Tensor:
    size = xs[0].shape[-2:]
    return torch.cat([xs[0]] + [interpolate(x, size, mode, align_corners) for x in xs[1:]], dim=1)


def upsample_concat_backward_reference(
    grad: Tensor, channels: Sequence[int], hw: Sequence[int], mode: str, align_corners: bool
) -> list[Tensor]:
    slices = torch.split(grad, list(channels), dim=1)
    grads = [slices[0].clone()]
    for k in range(1, len(slices)):
        grads.append(interpolate_adjoint(slices[k], hw[2 * k : 2 * k + 2], mode, align_corners))
    return grads


def _fake(xs, mode, align_corners):
    n, _, h, w = xs[0].shape
    return empty_like_layout(xs[0], (n, sum(x.shape[1] for x in xs), h, w))


def _backward_fake(grad, channels, hw, mode, align_corners):
    n = grad.shape[0]
    return [empty_like_layout(grad, (n, c, hw[2 * k], hw[2 * k + 1])) for k, c in enumerate(channels)]


def _setup_context(ctx, inputs, output):
    xs, mode, align_corners = inputs
    ctx.channels = [x.shape[1] for x in xs]
    ctx.hw = [s for x in xs for s in x.shape[-2:]]
    ctx.options = (mode, align_corners)


def _backward(ops, ctx, grad):
    return ops.upsample_concat_backward(grad, ctx.channels, ctx.hw, *ctx.options), None, None


def _setup_backward_context(ctx, inputs, output):
    ctx.options = inputs[3:]


def _double_backward(ops, ctx, grads):
    return ops.upsample_concat(list(grads), *ctx.options), None, None, None, None


define_op(
    OpSpec(
        "upsample_concat", SCHEMA, upsample_concat_reference, _fake, Autograd(_backward, _setup_context), autocast=True
    )
)
define_op(
    OpSpec(
        "upsample_concat_backward",
        BACKWARD_SCHEMA,
        upsample_concat_backward_reference,
        _backward_fake,
        Autograd(_double_backward, _setup_backward_context),
        family="upsample_concat",
    )
)


def upsample_concat(
    xs: Sequence[Tensor], *, mode: str = "bilinear", align_corners: bool = False, backend: str | None = None
) -> Tensor:
    """Interpolate every map in ``xs`` to ``xs[0]``'s size and concatenate them along channels."""
    xs = list(xs)
    if not xs:
        raise ValueError("upsample_concat: needs at least one tensor")
    if all(isinstance(t, Tensor) for t in xs):
        xs = promote(xs)
    check_mode(mode, align_corners)
    check_feature_maps("upsample_concat", [(f"xs[{k}]", t) for k, t in enumerate(xs)])
    run = kernel("upsample_concat", resolve_backend(backend, xs[0].device), xs[0])
    return run(xs, mode, align_corners)
