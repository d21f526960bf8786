"""``conv_bias_act``: a convolution with its epilogue (bias, optional residual add, optional ReLU) in
one library call, for inference with BatchNorm folded into the weights.

    out = act(conv2d(x, weight, bias, stride, padding) + residual)

x: (N, C_in, H, W); weight: (C_out, C_in, k, k); bias: (C_out,); residual: None or (N, C_out, H', W')
with the conv's output size; act is ReLU or the identity.

Implementations: the vendor libraries' fused convolutions — oneDNN's ``mkldnn._convolution_pointwise``
on the CPU (fp32, and bf16 where the CPU has it natively: :func:`cpu_features.native_bf16`), cuDNN's
``cudnn_convolution_relu`` / ``cudnn_convolution_add_relu`` on CUDA — and the reference composition
(``F.conv2d`` + add + ReLU). The reference runs when the reference backend is selected, for export
(ONNX, tracing), for combinations the libraries lack, and under ``torch.compile``, which fuses these
epilogues itself. A library that refuses some operands (raises) is not asked again for that device,
dtype and layout: one warning, then the reference.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layout import memory_format_of
from . import cpu_features
from .registry import exporting, requested_backend

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
_CUDNN_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def conv_bias_act_reference(
    x: Tensor, weight: Tensor, bias: Tensor, stride: int, padding: int, residual: Tensor | None, relu: bool
) -> Tensor:
    out = F.conv2d(x, weight, bias, stride, padding)
    if residual is not None:
        out = out + residual
    return torch.relu(out) if relu else out


def _onednn_takes(t: Tensor) -> bool:
    """Whether oneDNN's convolutions take ``t``'s device and dtype on this machine."""
    return (
        t.device.type == "cpu"
        and t.dtype in _ONEDNN_DTYPES
        and torch.backends.mkldnn.is_available()
        and cpu_features.onednn_native(t.dtype)
    )


def prepack_weight(weight: Tensor, *, stride: int, padding: int, input_shape: tuple[int, ...]) -> Tensor | None:
    """``weight`` reordered once into the blocked layout oneDNN picks for inputs of ``input_shape``
    (an opaque oneDNN tensor, as inductor's freezing makes), to pass as ``conv_bias_act(...,
    packed=)``: the library then skips reordering the weights on every call. None where the oneDNN
    call does not run: not a CPU float32/bfloat16 weight (bfloat16 only where the CPU has it
    natively), or while compiling or exporting."""
    if not _onednn_takes(weight) or torch.compiler.is_compiling() or exporting():
        return None
    pad, st = [padding, padding], [stride, stride]
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_convolution_weight(weight, pad, st, [1, 1], 1, list(input_shape))


def _onednn(x, weight, bias, stride, padding, residual, relu):
    pad, st, dil = [padding, padding], [stride, stride], [1, 1]
    unary = "relu" if relu else None
    if residual is None:
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, pad, st, dil, 1, unary or "none", [], None)
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, weight, bias, pad, st, dil, 1, "add", None, unary, [], None
    )


def _onednn_accumulate(x, weight, bias, stride, padding, residual, relu):
    """oneDNN's sum post-op: the result is written into ``residual``'s memory."""
    unary = "relu" if relu else None
    return torch.ops.mkldnn._convolution_pointwise_.binary(
        residual, x, weight, bias, [padding, padding], [stride, stride], [1, 1], 1, "add", 1.0, unary, [], None
    )


def _cudnn(x, weight, bias, stride, padding, residual, relu):
    st, pad, dil = [stride, stride], [padding, padding], [1, 1]
    if residual is None:
        return torch.cudnn_convolution_relu(x, weight, bias, st, pad, dil, 1)
    return torch.cudnn_convolution_add_relu(x, weight, residual, 1.0, bias, st, pad, dil, 1)


# (library call, device type, dtype, layout, residual?) the library refused once: the reference runs
# for those from then on, after one warning that says why.
_REFUSED: set[tuple] = set()


def _vendor(x: Tensor, residual: Tensor | None, relu: bool):
    """The fused library call for these operands, or None where only the reference applies."""
    if _onednn_takes(x):
        return _onednn
    if x.device.type == "cuda" and x.dtype in _CUDNN_DTYPES and relu and torch.backends.cudnn.is_available():
        return _cudnn
    return None


def _call_vendor(impl, x, weight, bias, stride, padding, residual, relu) -> Tensor | None:
    """``impl(...)``, or None (with a one-time warning) if the library refuses these operands."""
    key = (impl.__name__, x.device.type, x.dtype, memory_format_of(x), residual is None)
    if key in _REFUSED:
        return None
    try:
        return impl(x, weight, bias, stride, padding, residual, relu)
    except RuntimeError as exc:
        _REFUSED.add(key)
        warnings.warn(
            f"conv_bias_act: the fused library convolution ({impl.__name__[1:]}) refused "
            f"{x.dtype} {memory_format_of(x)} operands ({exc}); using conv + add + ReLU for them",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def conv_bias_act(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    *,
    stride: int = 1,
    padding: int = 0,
    residual: Tensor | None = None,
    relu: bool = True,
    backend: str | None = None,
    packed: Tensor | None = None,
    accumulate: bool = False,
) -> Tensor:
    """``act(conv2d(x, weight, bias, stride, padding) + residual)`` in one fused library call where one
    exists; ``backend="reference"`` (or the global selection) forces the plain composition.

    ``packed``: the same weight from :func:`prepack_weight`, which the oneDNN call uses instead of
    ``weight`` (every other path reads ``weight``). ``accumulate``: the caller no longer needs
    ``residual``, so the oneDNN call may add into its memory and return it (no new output buffer)."""
    if requested_backend(backend) != "reference" and not torch.compiler.is_compiling():
        impl = _vendor(x, residual, relu)
        if impl is _onednn and accumulate and residual is not None:
            impl = _onednn_accumulate
        if impl is not None:
            w = packed if impl in (_onednn, _onednn_accumulate) and packed is not None else weight
            out = _call_vendor(impl, x, w, bias, stride, padding, residual, relu)
            if out is not None:
                return out
    return conv_bias_act_reference(x, weight, bias, stride, padding, residual, relu)
