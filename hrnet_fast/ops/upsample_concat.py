"""``upsample_concat``: every branch interpolated to the first (highest-resolution) branch's size and
concatenated along channels, as the HRNetV2 segmentation head and the V2p neck do.

    out = cat([xs[0], interp(xs[1], size), ..., interp(xs[n-1], size)], dim=1),  size = xs[0].shape[-2:]

xs[k]: (N, C_k, H_k, W_k); out: (N, sum C_k, H_0, W_0) in xs[0]'s memory format. ``interp`` is
``F.interpolate(size=...)``. Backward: split the gradient by channels; slice k goes through the
adjoint of its interpolation (slice 0 straight through).

Fused backends implement :data:`FORWARD_SCHEMA` / :data:`BACKWARD_SCHEMA` and call
:func:`register_fused`, as for ``upsample_sum``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .autocast import promote, register_autocast
from .backends import resolve_backend
from .checks import check_feature_maps, check_mode
from .interp import empty_like_layout, interpolate, interpolate_adjoint

log = logging.getLogger(__name__)

FORWARD_SCHEMA = "(Tensor[] xs, str mode, bool align_corners) -> Tensor"
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


def _forward_fake(xs, mode, align_corners):
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


def register_fused(forward_op: str, backward_op: str) -> None:
    """Fake implementations for a backend's op pair and the forward op's autograd formula."""
    torch.library.register_fake(forward_op)(_forward_fake)
    torch.library.register_fake(backward_op)(_backward_fake)
    namespace, name = backward_op.split("::")

    def backward(ctx, grad):
        grads = getattr(getattr(torch.ops, namespace), name)(grad, ctx.channels, ctx.hw, *ctx.options)
        return grads, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=_setup_context)
    register_autocast(forward_op)


def upsample_concat_extension(xs, mode, align_corners):
    """The C++ extension's op (``hrnet_fast/_ext.py``): its CPU or CUDA kernel, by the tensors' device."""
    return torch.ops.hrnet_fast.upsample_concat(xs, mode, align_corners)


def upsample_concat_triton(xs, mode, align_corners):
    """The Triton op, defined by ``ops/triton_ops.py`` once the triton backend is found usable."""
    return torch.ops.hrnet_fast.upsample_concat_triton(xs, mode, align_corners)


_IMPLS: dict[str, Callable[..., Tensor]] = {
    "reference": upsample_concat_reference,
    "cpu": upsample_concat_extension,
    "cuda": upsample_concat_extension,
    "triton": upsample_concat_triton,
}


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
    name = resolve_backend(backend, xs[0].device)
    impl = _IMPLS.get(name)
    if impl is None:
        log.debug("upsample_concat: backend %r has no kernel for this op; using reference", name)
        impl = upsample_concat_reference
    return impl(xs, mode, align_corners)
