"""``upsample_sum``: the sum-and-ReLU at the heart of HRNet's multi-resolution fusion.

    out = act(base + sum_k same[k] + sum_k interp(low[k], size=base.shape[-2:], mode, align_corners))

base: (N, C, H, W); each same[k]: (N, C, H, W); each low[k]: (N, C, h_k, w_k) at any size; act is
ReLU or the identity; ``interp`` is exactly ``F.interpolate(size=...)``, so sizes need not divide
(250x190 inputs happen). For output branch i of a fusion step, base is branch i itself, ``same`` the
strided-conv paths from the higher-resolution branches and ``low`` the 1x1-conv projections of the
lower-resolution ones. ``out`` has base's dtype, device and memory format.

Backward, with g the output gradient and m = (out > 0) under ReLU (else 1):
    d base = d same[k] = g * m,      d low[k] = interp_adjoint(g * m, (h_k, w_k))

Fused backends implement the two custom ops of :data:`FORWARD_SCHEMA` and :data:`BACKWARD_SCHEMA`
and call :func:`register_fused` once, which gives the forward op its fake (meta) implementation and
its autograd formula, so ``torch.compile`` traces through it and ``opcheck`` passes, and its
autocast rule (mixed floating inputs promote, as for ``aten::add``; see :mod:`.autocast`).
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

FORWARD_SCHEMA = "(Tensor base, Tensor[] same, Tensor[] low, str mode, bool align_corners, bool relu) -> Tensor"
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


def upsample_sum_backward_reference(
    grad: Tensor, out: Tensor, low_hw: Sequence[int], mode: str, align_corners: bool, relu: bool
) -> tuple[Tensor, list[Tensor]]:
    """(g * m, [interp_adjoint(g * m, (h_k, w_k))]) in PyTorch ops; see the module docstring."""
    g = grad * (out > 0) if relu else grad.clone()
    pairs = [low_hw[k : k + 2] for k in range(0, len(low_hw), 2)]
    return g, [interpolate_adjoint(g, hw, mode, align_corners) for hw in pairs]


def _forward_fake(base, same, low, mode, align_corners, relu):
    return torch.empty_like(base)


def _backward_fake(grad, out, low_hw, mode, align_corners, relu):
    n, c = grad.shape[:2]
    pairs = [low_hw[k : k + 2] for k in range(0, len(low_hw), 2)]
    return torch.empty_like(grad), [empty_like_layout(grad, (n, c, *hw)) for hw in pairs]


def _setup_context(ctx, inputs, output):
    _, same, low, mode, align_corners, relu = inputs
    ctx.save_for_backward(output)
    ctx.num_same = len(same)
    ctx.low_hw = [s for t in low for s in t.shape[-2:]]
    ctx.options = (mode, align_corners, relu)


def register_fused(forward_op: str, backward_op: str) -> None:
    """Give a backend's pair of custom ops (qualified names, e.g. ``"hrnet_fast::upsample_sum"``)
    their fake implementations and the forward op its autograd formula (through ``backward_op``)."""
    torch.library.register_fake(forward_op)(_forward_fake)
    torch.library.register_fake(backward_op)(_backward_fake)
    namespace, name = backward_op.split("::")

    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        g, g_low = getattr(getattr(torch.ops, namespace), name)(grad, out, ctx.low_hw, *ctx.options)
        return g, [g] * ctx.num_same, g_low, None, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=_setup_context)
    register_autocast(forward_op)


def upsample_sum_extension(base, same, low, mode, align_corners, relu):
    """The C++ extension's op (``hrnet_fast/_ext.py``): its CPU or CUDA kernel, by the tensors' device."""
    return torch.ops.hrnet_fast.upsample_sum(base, same, low, mode, align_corners, relu)


def upsample_sum_triton(base, same, low, mode, align_corners, relu):
    """The Triton op, defined by ``ops/triton_ops.py`` once the triton backend is found usable."""
    return torch.ops.hrnet_fast.upsample_sum_triton(base, same, low, mode, align_corners, relu)


_IMPLS: dict[str, Callable[..., Tensor]] = {
    "reference": upsample_sum_reference,
    "cpu": upsample_sum_extension,
    "cuda": upsample_sum_extension,
    "triton": upsample_sum_triton,
}


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
    name = resolve_backend(backend, base.device)
    impl = _IMPLS.get(name)
    if impl is None:
        log.debug("upsample_sum: backend %r has no kernel for this op; using reference", name)
        impl = upsample_sum_reference
    return impl(base, same, low, mode, align_corners, relu)
