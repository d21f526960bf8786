"""Inference forward of :class:`MultiResolutionFusion` through the fully fused ``fusion_branch`` op
(level 2): BatchNorm folded into the convs, one fused launch per output branch.

For output branch i, every path j != i becomes, with s = gamma / sqrt(var + eps) of its BN,
W' = W * s and b' = beta - mean * s:

    j > i (1x1 conv + BN, upsampled):  low[j] = x_j,  low_weight = W'
    j < i (stride-2 3x3 convs + BN):   the first i-j-1 steps run here (conv(W', b') + ReLU, see
                                       _chain_start); the last step goes into the op as
                                       down = its input, down_weight = W'
    bias = sum of the paths' b'       (interpolation keeps constants)

Folded weights are cached per module, device and dtype and refolded whenever any parameter or
buffer of the module changes (its ``_version``, storage, device or dtype: load_state_dict, .to(),
in-place updates) or a submodule, parameter or buffer is replaced, added or removed. In-place
writes through ``.data`` bypass the version counter; call :func:`clear_folded` after those. Under
``torch.compile`` the folding is traced into the graph instead (a handful of tiny fused kernels, or
constants with freezing).

What a forward reads of the module's tree (its tensors, BatchNorms and chain steps) comes from a
:class:`_Tree` snapshot, checked on each call against the ids in the tree's ``_modules``,
``_parameters`` and ``_buffers`` dicts (a few C-level passes) instead of walking
``parameters()``/``buffers()``/``modules()``.
"""

from __future__ import annotations

import itertools
import logging
import operator
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layout import dense, memory_format_of, weight_layout
from ..ops import fusion_branch
from ..ops.registry import unsupported_reason
from .folded import FoldedConv, fold_conv_bn

log = logging.getLogger(__name__)

# map dtypes whose fusion step runs channels_last on a CPU whatever their layout (see folded_forward)
_CHANNELS_LAST_ON_CPU = (torch.float16, torch.bfloat16)
# The zero maps the chain steps pass as ``base`` (_chain_step), channels_last, by shape, dtype and
# device, shared by every module (only ever read); at most MAX_ZERO_MAPS, more clear them.
_ZEROS: dict[tuple, Tensor] = {}
MAX_ZERO_MAPS = 8


@dataclass(frozen=True)
class FoldedBranch:
    """Folded parameters of one output branch, in the maps' dtype."""

    down_steps: list[list[tuple[Tensor, Tensor]]]  # per j < i: (W', b') of the chain's earlier steps
    step_weight: list[list[Tensor]]  # the W' of down_steps in fusion_branch's layout (weight_layout)
    down_weight: list[Tensor]  # per j < i: W' of the chain's last step, (C_i, C_j', 3, 3)
    low_weight: list[Tensor]  # per j > i: W' of the projection, (C_i, C_j, 1, 1)
    bias: Tensor  # (C_i,)


class _Tree:
    """A snapshot of one fusion module's tree, and the folded weights cached for it.

    ``dicts``: every module's ``_modules``, ``_parameters`` and ``_buffers``, whose values' ids, in
    order, make ``layout``; the snapshot holds every value (``modules``, ``tensors``), so no id is
    reused while it lives (the fusion module itself only weakly, through ``_CACHE``).
    ``folded``: (dtype, device) -> (key of the tensors, folded branches); ``firsts``: per output
    branch i and j < i, the first module of each earlier step of the downsample chain j -> i.
    """

    __slots__ = ("dicts", "firsts", "folded", "layout", "modules", "no_stats", "norms", "params", "tensors")

    def __init__(self, fusion: nn.ModuleList):
        modules = list(fusion.modules())
        self.dicts = [d for m in modules for d in (m._modules, m._parameters, m._buffers)]
        self.layout = _layout(self.dicts)
        self.modules = modules[1:]  # not the fusion module itself: the cache holds that weakly
        self.params = list(fusion.parameters())
        self.tensors = [*self.params, *fusion.buffers()]
        self.norms = [m for m in modules if isinstance(m, nn.BatchNorm2d)]
        self.no_stats = any(m.running_var is None for m in self.norms)  # a buffer slot: in the layout
        self.folded: dict[tuple, tuple] = {}
        self.firsts: list[list[tuple[nn.Module, ...]]] | None = None


_CACHE: weakref.WeakKeyDictionary[nn.Module, _Tree] = weakref.WeakKeyDictionary()
_chain = itertools.chain.from_iterable
_META = operator.attrgetter("_version", "device", "dtype")


def _layout(dicts: list[dict]) -> tuple[int, ...]:
    return tuple(map(id, _chain(map(dict.values, dicts))))


def _tree(fusion: nn.ModuleList) -> _Tree:
    """The module's snapshot, made afresh when a submodule, parameter or buffer was replaced, added
    or removed since the last one. Not used while compiling, where the plain walks trace as before."""
    tree = _CACHE.get(fusion)
    if tree is None or tree.layout != _layout(tree.dicts):
        tree = _CACHE[fusion] = _Tree(fusion)
    return tree


def _key(tensors: list[Tensor]) -> tuple:
    """What changes when a tensor's values may have: its version, storage, device or dtype."""
    return tuple(map(_META, tensors)), tuple(map(Tensor.data_ptr, tensors))


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
            steps, step_weight, down_weight, low_weight, biases = [], [], [], [], []
            for j in range(n):
                if j < i:
                    folded = [_fold(step) for step in row[j]]
                    steps.append([(w.to(dtype), b.to(dtype)) for w, b in folded[:-1]])
                    step_weight.append([weight_layout(w) for w, _ in steps[-1]])
                    down_weight.append(weight_layout(folded[-1][0].to(dtype)))
                    biases.append(folded[-1][1])
                elif j > i:
                    w, b = _fold(row[j])
                    low_weight.append(weight_layout(w.to(dtype)))
                    biases.append(b)
            bias = torch.stack(biases).sum(0).to(dtype)
            branches.append(FoldedBranch(steps, step_weight, down_weight, low_weight, bias))
    return branches


def folded_branches(fusion: nn.ModuleList, dtype: torch.dtype, device: torch.device) -> list[FoldedBranch]:
    """The module's folded parameters for maps of ``dtype``, from the cache while they are current."""
    if torch.compiler.is_compiling():
        return _fold_branches(fusion, dtype)
    return _cached_branches(fusion, _tree(fusion), dtype, device)


def _cached_branches(fusion: nn.ModuleList, tree: _Tree, dtype: torch.dtype, device: torch.device):
    tensors = tree.tensors
    if any(map(Tensor.is_inference, tensors)):  # no version counter to key a cache on
        return _fold_branches(fusion, dtype)
    key = _key(tensors)
    hit = tree.folded.get((dtype, device))
    if hit is None or hit[0] != key:
        hit = tree.folded[(dtype, device)] = (key, _fold_branches(fusion, dtype))
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
    if torch.compiler.is_compiling():
        params = list(fusion.parameters())
        norms = [m for m in fusion.modules() if isinstance(m, nn.BatchNorm2d)]
        no_stats = any(m.running_var is None for m in norms)
    else:
        tree = _tree(fusion)
        params, norms, no_stats = tree.params, tree.norms, tree.no_stats
    if torch.is_grad_enabled() and (any(x.requires_grad for x in xs) or any(p.requires_grad for p in params)):
        return "gradients are needed (level 2 runs under torch.no_grad() or torch.inference_mode())"
    if no_stats or not all(m.affine for m in norms):
        return "a BatchNorm without running statistics or affine parameters cannot be folded"
    return None


def _firsts(fusion: nn.ModuleList) -> list[list[tuple[nn.Module, ...]]]:
    return [[tuple(step[0] for step in list(row[j])[:-1]) for j in range(i)] for i, row in enumerate(fusion)]


def _zero_map(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Zeros of ``shape``, channels_last, with ``like``'s dtype and device: kept in _ZEROS, or fresh
    ones while compiling."""
    if torch.compiler.is_compiling():
        return _channels_last_zeros(shape, like)
    key = (shape, like.dtype, like.device)
    zeros = _ZEROS.get(key)
    if zeros is None:
        if len(_ZEROS) >= MAX_ZERO_MAPS:
            _ZEROS.clear()
        with torch.inference_mode(False):  # usable outside inference mode too
            zeros = _channels_last_zeros(shape, like)
        _ZEROS[key] = zeros
    return zeros


def _channels_last_zeros(shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last).zero_()


def _chain_step(x: Tensor, weight: Tensor, bias: Tensor, backend: str) -> Tensor:
    """relu(conv3x3_stride2_pad1(x; weight) + bias) as one ``fusion_branch`` call: one down path, no
    low paths, a zero base. ``weight``: (C_out, C_in, 3, 3) in the op's layout (weight_layout).
    The result is channels_last whatever x's layout (the op's output takes its base's): the CPU
    kernel writes it without a transpose and its next readers, the chain's next step and the output
    branch's call, read it in place (the op passes down maps to the CPU kernel as they are)."""
    shape = (x.shape[0], weight.shape[0], (x.shape[2] + 1) // 2, (x.shape[3] + 1) // 2)
    return fusion_branch(_zero_map(shape, x), [x], [weight], [], [], bias, backend=backend)


def _chain_start(firsts: tuple[nn.Module, ...], steps, weights, x: Tensor, backend: str) -> Tensor:
    """The earlier steps of a downsample chain, each relu(conv3x3_stride2_pad1(x; W') + b'):
    - the module's own FoldedConv where :func:`hrnet_fast.optimize` folded it (one prepared oneDNN
      call on a CPU);
    - else, on a CPU on backend ``"cpp"``, the C++ ``fusion_branch`` kernel (_chain_step;
      ``weights``: the W' in its layout): with it the whole step runs faster than with torch's
      conv + ReLU, though not every chain step does (benchmarks/cpu_level2.py, its chain-step table);
    - else torch's conv + ReLU with the cached folded weights.
    ``firsts``: the first module of each of those steps."""
    for step, (w, b), weight in zip(firsts, steps, weights, strict=True):
        if isinstance(step, FoldedConv) and step.weight.dtype == x.dtype:
            x = step(x)
        elif backend == "cpp" and x.device.type == "cpu":
            x = _chain_step(x, weight, b, backend)
        else:
            x = F.relu(F.conv2d(x, w, b, stride=2, padding=1))
    return x


def folded_forward(fusion: nn.ModuleList, xs, backend: str) -> list[Tensor]:
    """The fusion step with folded BN, one fused ``fusion_branch`` launch per output branch.

    On a CPU, 16-bit maps run channels_last whatever their layout: the C++ kernel stages NCHW rows
    per band and path (a transpose and, for 16-bit maps, a conversion, several times per map, the
    chain steps' calls included), so each map is converted once and
    each output comes back in its base map's layout. float32 NCHW maps stay as they are: converting
    them costs as much as it saves (``benchmarks/cpu_level2.py`` measures both)."""
    if xs[0].device.type == "cpu" and xs[0].dtype in _CHANNELS_LAST_ON_CPU:
        formats = [memory_format_of(x) for x in xs]
        if any(f != torch.channels_last for f in formats):
            outs = _folded_forward(fusion, dense(xs, torch.channels_last), backend)
            return [out.contiguous(memory_format=f) for out, f in zip(outs, formats, strict=False)]
    return _folded_forward(fusion, xs, backend)


def _folded_forward(fusion: nn.ModuleList, xs, backend: str) -> list[Tensor]:
    n = len(xs)
    dtype, device = xs[0].dtype, xs[0].device
    if torch.compiler.is_compiling():
        branches, firsts = _fold_branches(fusion, dtype), _firsts(fusion)
    else:
        tree = _tree(fusion)
        branches = _cached_branches(fusion, tree, dtype, device)
        if tree.firsts is None:
            tree.firsts = _firsts(fusion)
        firsts = tree.firsts
    outs = []
    for i, folded in enumerate(branches):
        down = [
            _chain_start(firsts[i][j], steps, folded.step_weight[j], xs[j], backend)
            for j, steps in enumerate(folded.down_steps)
        ]
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
