"""``optimize(model)``: an inference engine for a trained HRNet with the same outputs.

What it does to a copy of the model (the original is left as it was):
  - folds every BatchNorm into the conv before it and fuses each conv's epilogue into one library
    call (bias + ReLU; bias + residual + ReLU at the end of BasicBlock/Bottleneck);
  - casts weights to ``dtype`` and lays tensors out channels_last;
  - on CUDA, replays a captured CUDA graph per input shape (the first call with a shape warms up
    and captures; later calls replay), which removes HRNet's launch overhead;
  - on a CPU, runs the 3x3 stride-1 convs of the blocks as Winograd F(2x2, 3x3) on the ``cpp``
    backend in fp32 (``winograd_conv``, 2.25x fewer multiplies), prepares every other conv once per
    input shape for oneDNN (its weights in oneDNN's blocked layout; with the ``onednn`` extra the
    whole primitive, called directly), and runs each op on torch's intra-op threads; with
    ``cpu_workers=True`` a batch of more than one image is split into chunks that worker threads
    with one intra-op thread each take in turn (:mod:`hrnet_fast.nn.cpu_workers`) instead.
    Otherwise the first call per input shape records the forward's ops, and later calls replay them
    without the Python that chose them (:mod:`hrnet_fast.nn.op_plan`; ``cpu_plan``).
The fusion steps keep running through ``hrnet_fast.ops`` with the model's backend. Under
``torch.compile`` it runs the folded model as plain ops and lets the compiler fuse and graph them.
"""

from __future__ import annotations

import copy
import functools
import warnings

import torch
from torch import Tensor, nn

from ..nn import CudaGraphCache, FoldedConv, OpPlans
from ..nn.cpu_workers import CpuWorkers, cpu_workers
from ..nn.folded import MAX_PACKED_SHAPES
from ..nn.version_sum import VersionSum
from ..ops import cpu_features
from ..ops.registry import exporting, get_backend
from .blocks import BasicBlock, Bottleneck
from .hrnet import HRNet

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class FoldedBasicBlock(nn.Module):
    """BasicBlock with BN folded: conv1+ReLU, then conv2 + shortcut + ReLU in one call, which on a
    CPU adds into the shortcut's memory: an identity shortcut overwrites the block's input, which
    the engine never reads again (inference only)."""

    def __init__(self, block: BasicBlock):
        super().__init__()
        self.conv1 = FoldedConv(block.conv1, block.bn1, relu=True)
        self.conv2 = FoldedConv(block.conv2, block.bn2, relu=True)
        self.downsample = fold_sequential(block.downsample) if block.downsample is not None else None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x), shortcut, accumulate=True)


class FoldedBottleneck(nn.Module):
    """Bottleneck with BN folded: conv1+ReLU, conv2+ReLU, then conv3 + shortcut + ReLU in one call
    (into the shortcut's memory on a CPU, as in :class:`FoldedBasicBlock`)."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1 = FoldedConv(block.conv1, block.bn1, relu=True)
        self.conv2 = FoldedConv(block.conv2, block.bn2, relu=True)
        self.conv3 = FoldedConv(block.conv3, block.bn3, relu=True)
        self.downsample = fold_sequential(block.downsample) if block.downsample is not None else None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv3(self.conv2(self.conv1(x)), shortcut, accumulate=True)


def _folded(module: nn.Module) -> nn.Module:
    if isinstance(module, BasicBlock):
        return FoldedBasicBlock(module)
    if isinstance(module, Bottleneck):
        return FoldedBottleneck(module)
    if type(module) is nn.Conv2d and FoldedConv.supports(module):  # a conv no BatchNorm follows (a head's last)
        return FoldedConv(module)
    if isinstance(module, nn.Sequential):
        return fold_sequential(module)
    fold_children_(module)
    return module


def fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    """Replace each Conv2d, BatchNorm2d[, ReLU] run with one FoldedConv (where it supports the conv);
    fold inside the rest."""
    items, out, i = list(seq), [], 0
    while i < len(items):
        if FoldedConv.supports(items[i]) and i + 1 < len(items) and isinstance(items[i + 1], nn.BatchNorm2d):
            relu = i + 2 < len(items) and isinstance(items[i + 2], nn.ReLU)
            out.append(FoldedConv(items[i], items[i + 1], relu))
            i += 3 if relu else 2
        else:
            out.append(_folded(items[i]))
            i += 1
    return nn.Sequential(*out)


def fold_children_(module: nn.Module) -> None:
    """Fold, in place, every block and Conv-BN(-ReLU) run below ``module``."""
    for name, child in module.named_children():
        setattr(module, name, _folded(child))


def fold_hrnet_(model: HRNet) -> HRNet:
    """Fold a (copied) HRNet in place: the stem, every block, transition, fusion path and head."""
    model.conv1 = FoldedConv(model.conv1, model.bn1, relu=True)
    model.conv2 = FoldedConv(model.conv2, model.bn2, relu=True)
    model.bn1, model.bn2, model.relu = nn.Identity(), nn.Identity(), nn.Identity()
    for name, child in model.named_children():
        if name not in ("conv1", "conv2", "bn1", "bn2", "relu"):
            setattr(model, name, _folded(child))
    return model


class OptimizedHRNet(nn.Module):
    """The inference engine :func:`optimize` returns; ``forward(x)`` gives the model's outputs.

    Inputs are cast to the engine's dtype and layout (so float32 images can be passed as they are);
    outputs come in the engine's dtype. Inference only: ``.train()`` raises.
    """

    def __init__(
        self, model: HRNet, dtype: torch.dtype, channels_last: bool, cuda_graph: bool, cpu_workers: bool, cpu_plan: bool
    ):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last
        self.cuda_graph = cuda_graph
        self.cpu_workers = cpu_workers
        self.cpu_plan = cpu_plan
        super().train(False)  # inference-only, and says so (exporters restore the mode they found)
        self.graphs = CudaGraphCache(model)
        # a plan per input signature, kept as long as the prepacked weights it reads
        self.plans = OpPlans(model, self._plan_state, max_plans=MAX_PACKED_SHAPES)
        self._versions = VersionSum(model.parameters())

    def __setstate__(self, state: dict) -> None:
        """Copies and unpickled engines count the versions of their own parameters (a copy made in
        inference mode has inference tensors, which count none)."""
        super().__setstate__(state)
        self._versions = VersionSum(self.model.parameters())

    def _plan_state(self) -> tuple:
        """What a recorded CPU plan depends on besides the input: the backend selection and the sum
        of the parameters' version counters (an in-place change to a weight makes the next call
        record afresh, with weights prepared again)."""
        return get_backend(), self.model.backend, self._versions()

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout inputs are cast to (kept as a bool: torch.save cannot pickle memory formats)."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def head(self) -> str:
        return self.model.head

    @property
    def arch(self):
        return self.model.arch

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("an optimize()d model is inference-only; train the original model instead")
        return super().train(False)

    def _apply(self, fn, *args, **kwargs):
        self.graphs.clear()  # captured graphs point at the old parameter storage
        self.plans.clear()  # as do recorded plans
        out = super()._apply(fn, *args, **kwargs)
        self._versions = VersionSum(self.model.parameters())
        return out

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the weights and activations: ``dtype``, except bfloat16 on a CPU without native
        bfloat16, where the engine computes in float32 (see :func:`optimize`)."""
        return self.model.conv1.weight.dtype

    def forward(self, x: Tensor):
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"expected images (N, 3, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        x = x.to(dtype=self.compute_dtype, memory_format=self.memory_format)
        if self.cuda_graph and x.is_cuda and not torch.compiler.is_compiling():
            return self._outputs(self.graphs(x), copy=False)
        tracing = torch.compiler.is_compiling() or exporting()
        if tracing or torch.is_inference_mode_enabled():
            return self._outputs(self._forward(x, tracing), copy=False)
        # Inference mode skips autograd's dispatch (and the custom ops' Python autograd wrappers) on
        # each of the forward's ~300 calls; the outputs leave it as ordinary tensors (one copy).
        with torch.inference_mode():
            out = self._forward(x, tracing)
        return self._outputs(out, copy=True)

    def _outputs(self, out, copy: bool):
        """``out`` in the engine's dtype, copied when ``copy`` (or cast, which copies)."""

        def finish(t: Tensor) -> Tensor:
            return t.to(self.dtype) if t.dtype != self.dtype else t.clone() if copy else t

        return tuple(finish(t) for t in out) if isinstance(out, tuple) else finish(out)

    def _forward(self, x: Tensor, tracing: bool):
        with torch.no_grad():
            if x.device.type != "cpu" or tracing:
                return self.model(x)
            workers = cpu_workers() if x.shape[0] > 1 and self.cpu_workers else None
            if workers is not None:
                return self._forward_on_workers(x, workers)
            return self.plans(x) if self.cpu_plan else self.model(x)

    def _forward_on_workers(self, x: Tensor, workers: CpuWorkers):
        """The batch split into chunks (two per worker thread, so a stalled core hands work over),
        each chunk run single-threaded by a worker, the outputs joined again: once BN is folded the
        model treats every image on its own."""
        chunks = x.tensor_split(min(2 * workers.size, x.shape[0]))
        outs = workers.map([functools.partial(self.model, chunk) for chunk in chunks])
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return (
            f"dtype={self.dtype}, compute_dtype={self.compute_dtype}, channels_last={self.channels_last}, "
            f"cuda_graph={self.cuda_graph}, cpu_workers={self.cpu_workers}, cpu_plan={self.cpu_plan}"
        )


def optimize(
    model: HRNet,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
    cuda_graph: bool = True,
    cpu_workers: bool = False,
    cpu_plan: bool = True,
    backend: str | None = None,
) -> OptimizedHRNet:
    """An inference engine with ``model``'s outputs: BN folded, fused conv epilogues, ``dtype``
    weights (default: the model's), channels_last, CUDA graphs per input shape on CUDA
    (``cuda_graph``), and on a CPU prepacked weights and each op split over torch's intra-op threads
    (``cpu_workers=True``: batches split over worker threads instead, one intra-op thread each),
    and on a CPU the forward's ops recorded per input shape and replayed (``cpu_plan``; an in-place
    change to a parameter or a new backend selection records afresh; call ``engine.plans.clear()``
    after setting one module's ``backend`` by hand). ``dtype=torch.bfloat16`` for a model on a CPU
    without native bfloat16 (AVX2 only, or a VM hiding AVX-512: :func:`hrnet_fast.ops.cpu_features.
    native_bf16`) computes in float32 and returns bfloat16 outputs, with a warning: bfloat16
    convolutions run emulated there, several times slower than float32 ones (``compute_dtype`` says
    which the engine uses).

    ``model`` must be an HRNet in eval mode (``model.eval()``); it is copied, never changed.
    ``backend`` selects the fused-op backend of the copy (default: the model's own choice).
    """
    if not isinstance(model, HRNet):
        raise TypeError(f"optimize() takes an hrnet_fast HRNet, got {type(model).__name__}")
    training = [name or "the model" for name, m in model.named_modules() if m.training]
    if training:
        raise RuntimeError(
            f"optimize() needs a model in eval mode (call model.eval() first); in train mode: {training[:3]}"
        )
    dtype = model.conv1.weight.dtype if dtype is None else dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype}")
    compute_dtype = dtype
    if model.conv1.weight.device.type == "cpu" and not cpu_features.onednn_native(dtype):
        compute_dtype = torch.float32
        warnings.warn(
            "optimize(dtype=torch.bfloat16): this CPU has no native bfloat16 arithmetic (AVX-512 or AMX), where "
            "bfloat16 convolutions run emulated, several times slower than float32 ones; the engine computes in "
            "float32 and returns bfloat16 outputs",
            RuntimeWarning,
            stacklevel=2,
        )
    folded = fold_hrnet_(copy.deepcopy(model))
    folded.backend = backend if backend is not None else model.backend  # reaches the new FoldedConvs too
    folded = folded.to(dtype=compute_dtype)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    return OptimizedHRNet(folded.eval(), dtype, channels_last, cuda_graph, cpu_workers, cpu_plan)
