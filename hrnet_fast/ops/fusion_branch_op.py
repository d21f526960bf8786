"""``fusion_branch``: one output branch of HRNet's fusion step for inference, fully fused (level 2).

    out = act( base
             + sum_k conv3x3_stride2_pad1(down[k], down_weight[k])
             + sum_k interp(conv1x1(low[k], low_weight[k]), size=base.shape[-2:], mode, align_corners)
             + bias )

base: (N, C, H, W). down[k]: (N, Cd_k, Hd_k, Wd_k), the input of the *last* stride-2 3x3 conv of the
downsample chain from a higher-resolution branch (its earlier steps run before the op), so
ceil(Hd_k / 2) = H and ceil(Wd_k / 2) = W; down_weight[k]: (C, Cd_k, 3, 3). low[k]: (N, Cl_k, h_k, w_k),
a lower-resolution branch at any size; low_weight[k]: (C, Cl_k, 1, 1). bias: (C,). Weights and bias
have base's dtype and device; weights in any layout, fastest with (k, k, C_in, C_out) memory
(:func:`hrnet_fast.layout.weight_layout`). BatchNorm is folded into the weights
(W * gamma / sqrt(var + eps)), and the folded shifts of all paths are summed into ``bias``
(interpolation keeps constants, so one bias serves every path). ``out`` has base's dtype, device and
memory format; the maps may come in either layout (the CPU kernel reads down and low maps as they
are, the other kernels get them in base's).

Inference only: the op has no gradient (its autograd formula raises); training runs level 1
(``upsample_sum``). Kernels: ``kernels/fusion_branch.py`` (Triton); ``csrc/cpu/fusion_branch_kernel.cpp``
and ``csrc/cuda/fusion_branch_kernel.cuh`` (C++, behind ``csrc/fusion_branch_op.cpp``). Tests:
``tests/test_fusion_branch.py``, ``tests/test_fusion_level2.py`` (through the model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_feature_maps, check_mode
from .interp import interpolate
from .registry import Autograd, OpSpec, define_op, kernel, resolve_backend

SCHEMA = (
    "(Tensor base, Tensor[] down, Tensor[] down_weight, Tensor[] low, Tensor[] low_weight, Tensor bias,"
    " str mode, bool align_corners, bool relu) -> Tensor"
)


def fusion_branch_reference(
    base: Tensor,
    down: Sequence[Tensor],
    down_weight: Sequence[Tensor],
    low: Sequence[Tensor],
    low_weight: Sequence[Tensor],
    bias: Tensor,
    mode: str,
    align_corners: bool,
    relu: bool,
) -> Tensor:
    """The eval-mode composition with folded BN, in PyTorch ops (one kernel per conv, add, upsample)."""
    out = base + bias.view(1, -1, 1, 1)
    for x, w in zip(down, down_weight, strict=True):
        out = out + F.conv2d(x, w, stride=2, padding=1)
    for x, w in zip(low, low_weight, strict=True):
        out = out + interpolate(F.conv2d(x, w), base.shape[-2:], mode, align_corners)
    return torch.relu(out) if relu else out


def _fake(base, down, down_weight, low, low_weight, bias, mode, align_corners, relu):
    return torch.empty_like(base)


def _no_backward(ops, ctx, grad):
    raise RuntimeError(
        "fusion_branch is inference-only and has no gradient; MultiResolutionFusion runs level 1 "
        "(upsample_sum) whenever gradients are needed"
    )


define_op(OpSpec("fusion_branch", SCHEMA, fusion_branch_reference, _fake, Autograd(_no_backward)))


def _check(base, down, down_weight, low, low_weight, bias) -> None:
    check_feature_maps(
        "fusion_branch",
        [("base", base)]
        + [(f"down[{k}]", t) for k, t in enumerate(down)]
        + [(f"low[{k}]", t) for k, t in enumerate(low)],
    )
    c, h, w = base.shape[1:]
    if len(down) != len(down_weight) or len(low) != len(low_weight):
        raise ValueError(
            f"fusion_branch: {len(down)} down maps with {len(down_weight)} weights, "
            f"{len(low)} low maps with {len(low_weight)} weights"
        )
    params = [("bias", bias, (c,))]
    for k, (x, wt) in enumerate(zip(down, down_weight, strict=True)):
        if (-(-x.shape[2] // 2), -(-x.shape[3] // 2)) != (h, w):
            raise ValueError(
                f"fusion_branch: down[{k}] is {tuple(x.shape[-2:])}; a stride-2 conv of it is not base's {(h, w)}"
            )
        params.append((f"down_weight[{k}]", wt, (c, x.shape[1], 3, 3)))
    params += [
        (f"low_weight[{k}]", wt, (c, x.shape[1], 1, 1)) for k, (x, wt) in enumerate(zip(low, low_weight, strict=True))
    ]
    for name, t, shape in params:
        if tuple(t.shape) != shape:
            raise ValueError(f"fusion_branch: {name} must have shape {shape}, got {tuple(t.shape)}")
        if t.dtype != base.dtype or t.device != base.device:
            raise TypeError(f"fusion_branch: {name} is {t.dtype} on {t.device}, base is {base.dtype} on {base.device}")


def fusion_branch(
    base: Tensor,
    down: Sequence[Tensor],
    down_weight: Sequence[Tensor],
    low: Sequence[Tensor],
    low_weight: Sequence[Tensor],
    bias: Tensor,
    *,
    mode: str = "nearest",
    align_corners: bool = False,
    relu: bool = True,
    backend: str | None = None,
) -> Tensor:
    """One fused fusion-step branch (see the module docstring); ``backend`` overrides the global choice.

    Backends without a fused kernel for base's device and dtype run :func:`fusion_branch_reference`
    (with a debug log line saying why). The ``cpp`` kernels take at most 8 down and 8 low maps (an
    HRNet branch has at most 3 of each) and raise beyond that, naming ``backend='reference'``."""
    down, down_weight, low, low_weight = list(down), list(down_weight), list(low), list(low_weight)
    check_mode(mode, align_corners)
    _check(base, down, down_weight, low, low_weight, bias)
    run = kernel("fusion_branch", resolve_backend(backend, base.device), base)
    return run(base, down, down_weight, low, low_weight, bias, mode, align_corners, relu)
