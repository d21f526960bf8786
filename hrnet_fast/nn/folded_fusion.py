"""Inference forward of :class:`MultiResolutionFusion` through the fully fused ``fusion_branch`` op
(level 2): BatchNorm folded into the convs, one fused launch per output branch.

For output branch i, every path j != i becomes, with s = gamma / sqrt(var + eps) of its BN,
W' = W * s and b' = beta - mean * s:

    j > i (1x1 conv + BN, upsampled):  low[j] = x_j,  low_weight = W'
    j < i (stride-2 3x3 convs + BN):   the first i-j-1 steps run here as framework convs
                                       (conv(W', b') + ReLU); the last step goes into the op as
                                       down = its input, down_weight = W'
    bias = sum of the paths' b'       (interpolation keeps constants)

Folded weights are cached per module, device and dtype and refolded whenever any parameter or
buffer of the module changes (its ``_version``, storage, device or dtype: load_state_dict, .to(),
in-place updates). In-place writes through ``.data`` bypass the version counter; call
:func:`clear_folded` after those. Under ``torch.compile`` the folding is traced into the graph
instead (a handful of tiny fused kernels, or constants with freezing).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layout import weight_layout
from ..ops import fusion_branch
from ..ops.registry import unsupported_reason
from .folded import FoldedConv, fold_conv_bn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldedBranch:
    """Folded parameters of one output branch, in the maps' dtype."""

    down_steps: list[list[tuple[Tensor, Tensor]]]  # per j < i: (W', b') of the chain's earlier steps
    down_weight: list[Tensor]  # per j < i: W' of the chain's last step, (C_i, C_j', 3, 3)
    low_weight: list[Tensor]  # per j > i: W' of the projection, (C_i, C_j, 1, 1)
    bias: Tensor  # (C_i,)


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def _fold(step: nn.Sequential) -> tuple[Tensor, Tensor]:
    """(W', b') in fp32 of one path step: Sequential(conv, BN[, ReLU]) as the official layout has it,
    or Sequential(FoldedConv) once :func:`hrnet_fast.optimize` has folded it already."""
    if isinstance(step[0], FoldedConv):
        return step[0].weight.float(), step[0].bias.float()
    weight, bias = fold_conv_bn(step[0], step[1])
    return weight.float(), bias.float()


def _fold_branches(fusion: nn.ModuleList, dtype: torch.dtype) -> list[FoldedBranch]:
    branches = []
    n = len(fusion.channels)
    with torch.no_grad():
        for i, row in enumerate(fusion):
            steps, down_weight, low_weight, biases = [], [], [], []
            for j in range(n):
                if j < i:
                    folded = [_fold(step) for step in row[j]]
                    steps.append([(w.to(dtype), b.to(dtype)) for w, b in folded[:-1]])
                    down_weight.append(weight_layout(folded[-1][0].to(dtype)))
                    biases.append(folded[-1][1])
                elif j > i:
                    w, b = _fold(row[j])
                    low_weight.append(weight_layout(w.to(dtype)))
                    biases.append(b)
            bias = torch.stack(biases).sum(0).to(dtype)
            branches.append(FoldedBranch(steps, down_weight, low_weight, bias))
    return branches


def folded_branches(fusion: nn.ModuleList, dtype: torch.dtype, device: torch.device) -> list[FoldedBranch]:
    """The module's folded parameters for maps of ``dtype``, from the cache while they are current."""
    if torch.compiler.is_compiling():
        return _fold_branches(fusion, dtype)
    tensors = [*fusion.parameters(), *fusion.buffers()]
    if any(t.is_inference() for t in tensors):  # no version counter to key a cache on
        return _fold_branches(fusion, dtype)
    key = tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in tensors)
    per_module = _CACHE.setdefault(fusion, {})
    hit = per_module.get((dtype, device))
    if hit is None or hit[0] != key:
        hit = per_module[(dtype, device)] = (key, _fold_branches(fusion, dtype))
    return hit[1]


def clear_folded(fusion: nn.ModuleList) -> None:
    """Forget the module's folded parameters (needed only after writes through ``.data``)."""
    _CACHE.pop(fusion, None)


def use_level2(fusion: nn.ModuleList, xs, backend: str) -> bool:
    """Whether the fused level-2 forward applies: eval mode, a ``fusion_branch`` kernel on
    ``backend`` (resolved) for these maps, no gradients needed, BNs that fold. When it does not, a
    debug log line says why (level 1 runs instead)."""
    if fusion.training:
        return False
    reason = _level1_reason(fusion, xs, backend)
    if reason is not None and not torch.compiler.is_compiling():
        log.debug("MultiResolutionFusion: level 1 instead of level 2 on backend %r: %s", backend, reason)
    return reason is None


def _level1_reason(fusion: nn.ModuleList, xs, backend: str) -> str | None:
    reason = unsupported_reason("fusion_branch", backend, xs[0])
    if reason is not None:
        return reason
    if torch.is_grad_enabled() and (
        any(x.requires_grad for x in xs) or any(p.requires_grad for p in fusion.parameters())
    ):
        return "gradients are needed (level 2 runs under torch.no_grad() or torch.inference_mode())"
    for m in fusion.modules():
        if isinstance(m, nn.BatchNorm2d) and (m.running_var is None or not m.affine):
            return "a BatchNorm without running statistics or affine parameters cannot be folded"
    return None


def folded_forward(fusion: nn.ModuleList, xs, backend: str) -> list[Tensor]:
    """The fusion step with folded BN, one fused ``fusion_branch`` launch per output branch."""
    n = len(xs)
    outs = []
    for i, folded in enumerate(folded_branches(fusion, xs[0].dtype, xs[0].device)):
        down = []
        for j, steps in enumerate(folded.down_steps):
            t = xs[j]
            for w, b in steps:
                t = F.relu(F.conv2d(t, w, b, stride=2, padding=1))
            down.append(t)
        outs.append(
            fusion_branch(
                xs[i],
                down,
                folded.down_weight,
                xs[i + 1 : n],
                folded.low_weight,
                folded.bias,
                mode=fusion.upsample,
                align_corners=fusion.align_corners,
                backend=backend,
            )
        )
    return outs
