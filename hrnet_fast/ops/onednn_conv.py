"""Convolutions through oneDNN's primitive API directly (``csrc/onednn/onednn_conv.cpp``, library
``hrnet_fast_onednn``): the primitive and its reordered weights are made once per weight, input shape
and epilogue, and a call only executes it.

    out = act(conv2d(x, weight, bias, stride, padding) + residual)

x: (N, C_in, H, W) channels_last; weight (C_out, C_in, k, k), bias (C_out,); fp32 or bf16, all one
dtype, on the CPU. With a residual ((N, C_out, H', W'), channels_last) the result is added into its
memory (oneDNN's sum post-op) and the residual is returned; act is ReLU or the identity.

torch's own oneDNN call (``mkldnn._convolution_pointwise``) rebuilds its descriptors and looks the
primitive up on every call: on a 2-core AMD EPYC a 1x1 conv on a 2x2 map took 29 us through it and
10 us here (one-off measurement), with the same oneDNN kernels (brgconv) and results. torch does not
export its oneDNN, so this library links the one of the pip packages ``onednn-cpu-gomp`` (built for
GNU OpenMP, the runtime of PyPI's torch, so both share one thread pool and its thread count) and
``onednn-devel-cpu-gomp`` (headers): ``pip install hrnet-fast[onednn]``. Without them, or with
``HRNET_FAST_ONEDNN=0``, :func:`onednn_conv_status` says why and callers use torch's call.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
from torch import Tensor

from . import cpu_features

DISABLE_ENV = "HRNET_FAST_ONEDNN"
DTYPES = (torch.float32, torch.bfloat16)

_REFUSED: set[torch.dtype] = set()  # dtypes whose primitive oneDNN could not make here (warned once)


@functools.cache
def onednn_conv_status() -> str | None:
    """None when the direct oneDNN convolutions can run in this process, else why not (the library
    is built on the first call: seconds, once per machine)."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return f"turned off by {DISABLE_ENV}=0"
    if not torch.backends.mkldnn.is_available():
        return "this torch is built without oneDNN (mkldnn)"
    from .._ext import ExtensionBuildError, load_onednn  # on first use only: loading it may build it

    try:
        load_onednn()
    except ExtensionBuildError as exc:
        return f"hrnet_fast_onednn unavailable: {exc}"
    return None


def onednn_conv_applies(x: Tensor, weight: Tensor, residual: Tensor | None) -> bool:
    """Whether these operands fit the library: CPU, fp32/bf16 of one dtype (bf16 only where the CPU
    has it natively), dense channels_last maps (the residual, when given, is written into)."""
    maps = (x,) if residual is None else (x, residual)
    return (
        x.device.type == "cpu"
        and x.dtype in DTYPES
        and all(t.dtype == weight.dtype and t.is_contiguous(memory_format=torch.channels_last) for t in maps)
        and x.dtype not in _REFUSED
        and cpu_features.onednn_native(x.dtype)
        and onednn_conv_status() is None
    )


def prepare_onednn_conv(
    weight: Tensor, bias: Tensor, *, stride: int, padding: int, input_shape: tuple[int, ...], relu: bool, residual: bool
):
    """The primitive for inputs of ``input_shape`` (a ``torch.classes.hrnet_fast.OneDnnConv``, holding
    the weights reordered once), or None where oneDNN has no implementation for it on this CPU (one
    warning, then None for that dtype: callers use torch's call). Operands that do not fit
    (shapes, dtypes, devices) raise RuntimeError, as does calling it where :func:`onednn_conv_status`
    is not None."""
    reason = onednn_conv_status()
    if reason is not None:
        raise RuntimeError(f"direct oneDNN convolutions are unavailable: {reason}")
    try:
        return torch.classes.hrnet_fast.OneDnnConv(
            weight.detach(), bias.detach(), list(input_shape), stride, padding, relu, residual
        )
    except NotImplementedError as exc:
        _REFUSED.add(weight.dtype)
        warnings.warn(
            f"onednn_conv: oneDNN refused a {weight.dtype} convolution ({exc}); using torch's oneDNN call for "
            f"{weight.dtype} from now on",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def onednn_conv(prepared, x: Tensor, residual: Tensor | None = None) -> Tensor:
    """Run a primitive from :func:`prepare_onednn_conv` (prepared with a residual iff one is given)."""
    if residual is None:
        return torch.ops.hrnet_fast.onednn_conv(prepared, x)
    return torch.ops.hrnet_fast.onednn_conv_add_(prepared, x, residual)
