"""The ``triton`` backend's custom ops, in namespace ``hrnet_fast`` with the suffix ``_triton``:

    upsample_sum_triton, upsample_sum_backward_triton        (schemas of ops/upsample_sum.py)
    upsample_concat_triton, upsample_concat_backward_triton  (schemas of ops/upsample_concat.py)
    fusion_branch_triton                                     (schema of ops/fusion_branch.py)

Each is defined with ``Library.define`` and one Python implementation for the CUDA and CPU dispatch
keys (CPU only serves ``TRITON_INTERPRET=1``) that launches the kernels of ``hrnet_fast.kernels``;
triton is imported there, on the first launch, never at ``import hrnet_fast``. The op modules'
``register_fused`` add the fake implementations and autograd formulas. Importing this module
defines the ops; the backend registry does so when it finds the triton backend usable.

Why not ``torch.library.triton_op``: it would let Inductor see the kernel launches inside the op
(and let AOTInductor package them), but it brings its own fake implementation, traced from the
Python body, which fails on CPU under the interpreter (so CI could not run torch.compile or
opcheck on it) and would bypass the fake and autograd formulas the op modules define for every
backend. Inductor cannot fuse other work into our kernels either way, and the per-call dispatch
cost of an opaque custom op disappears under CUDA graphs. So one registration serves CPU tests and
CUDA alike, and the path CI tests is the path the GPU runs.

Maps are made dense in the layout of the first one (a copy only for mixed layouts); dtypes the
kernels do not cover (float64) run the reference composition, with a debug log line.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from ..kernels import check_device
from . import fusion_branch as branch_mod
from .interp import empty_like_layout, memory_format_of

# The op modules (hrnet_fast.ops re-exports functions of the same names).
sum_mod = importlib.import_module("hrnet_fast.ops.upsample_sum")
concat_mod = importlib.import_module("hrnet_fast.ops.upsample_concat")

log = logging.getLogger(__name__)

NAMESPACE = "hrnet_fast"
DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_lib = torch.library.Library(NAMESPACE, "FRAGMENT")


def _define(name: str, schema: str, impl) -> str:
    _lib.define(name + schema)
    for key in ("CUDA", "CPU"):
        _lib.impl(name, impl, key)
    return f"{NAMESPACE}::{name}"


def _dense(maps: Sequence[Tensor], fmt: torch.memory_format) -> list[Tensor]:
    return [t.contiguous(memory_format=fmt) for t in maps]


def _covered(op: str, t: Tensor) -> bool:
    """True when the kernels take ``t``; False (with a debug line) when the reference must run."""
    if t.dtype not in DTYPES:
        log.debug("%s: the Triton kernels cover %s, not %s; running the reference", op, DTYPES, t.dtype)
        return False
    check_device(op, t)
    return True


def _upsample_sum(base, same, low, mode, align_corners, relu):
    if not _covered("upsample_sum", base):
        out = sum_mod.upsample_sum_reference(base, same, low, mode, align_corners, relu)
        return out.clone() if out is base else out
    from ..kernels.upsample_sum import upsample_sum_forward

    fmt = memory_format_of(base)
    maps = _dense([base, *same, *low], fmt)
    out = torch.empty_like(base)
    cl = fmt == torch.channels_last
    upsample_sum_forward(out, maps[0], maps[1 : 1 + len(same)], maps[1 + len(same) :], mode, align_corners, relu, cl)
    return out


def _upsample_sum_backward(grad, out, low_hw, mode, align_corners, relu):
    if not _covered("upsample_sum_backward", grad):
        return sum_mod.upsample_sum_backward_reference(grad, out, low_hw, mode, align_corners, relu)
    from ..kernels.upsample_sum import upsample_sum_backward

    fmt = memory_format_of(grad)
    grad_d, out_d = _dense([grad, out], fmt)
    n, c = grad.shape[:2]
    grad_base = torch.empty_like(grad)
    grad_low = [empty_like_layout(grad, (n, c, *low_hw[k : k + 2])) for k in range(0, len(low_hw), 2)]
    cl = fmt == torch.channels_last
    upsample_sum_backward(grad_base, grad_low, grad_d, out_d, mode, align_corners, relu, cl)
    return grad_base, grad_low


def _upsample_concat(xs, mode, align_corners):
    if not _covered("upsample_concat", xs[0]):
        return concat_mod.upsample_concat_reference(xs, mode, align_corners)
    from ..kernels.upsample_concat import upsample_concat_forward

    fmt = memory_format_of(xs[0])
    n, _, h, w = xs[0].shape
    out = empty_like_layout(xs[0], (n, sum(x.shape[1] for x in xs), h, w))
    upsample_concat_forward(out, _dense(xs, fmt), mode, align_corners, fmt == torch.channels_last)
    return out


def _upsample_concat_backward(grad, channels, hw, mode, align_corners):
    if not _covered("upsample_concat_backward", grad):
        return concat_mod.upsample_concat_backward_reference(grad, channels, hw, mode, align_corners)
    from ..kernels.upsample_concat import upsample_concat_backward

    fmt = memory_format_of(grad)
    n = grad.shape[0]
    grads = [empty_like_layout(grad, (n, c, hw[2 * k], hw[2 * k + 1])) for k, c in enumerate(channels)]
    upsample_concat_backward(grads, grad.contiguous(memory_format=fmt), mode, align_corners, fmt == torch.channels_last)
    return grads


def _fusion_branch(base, down, down_weight, low, low_weight, bias, mode, align_corners, relu):
    args = (base, down, down_weight, low, low_weight, bias, mode, align_corners, relu)
    if not _covered("fusion_branch", base):
        return branch_mod.fusion_branch_reference(*args)
    from ..kernels.fusion_branch import fusion_branch_forward

    fmt = memory_format_of(base)
    maps = _dense([base, *down, *low], fmt)
    out = torch.empty_like(base)
    fusion_branch_forward(
        out,
        maps[0],
        maps[1 : 1 + len(down)],
        [branch_mod.weight_layout(w) for w in down_weight],
        maps[1 + len(down) :],
        [branch_mod.weight_layout(w) for w in low_weight],
        bias.contiguous(),
        mode,
        align_corners,
        relu,
        fmt == torch.channels_last,
    )
    return out


sum_mod.register_fused(
    _define("upsample_sum_triton", sum_mod.FORWARD_SCHEMA, _upsample_sum),
    _define("upsample_sum_backward_triton", sum_mod.BACKWARD_SCHEMA, _upsample_sum_backward),
)
concat_mod.register_fused(
    _define("upsample_concat_triton", concat_mod.FORWARD_SCHEMA, _upsample_concat),
    _define("upsample_concat_backward_triton", concat_mod.BACKWARD_SCHEMA, _upsample_concat_backward),
)
branch_mod.register_fused(_define("fusion_branch_triton", branch_mod.FORWARD_SCHEMA, _fusion_branch))
