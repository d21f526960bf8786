"""Inference-time convolutions with BatchNorm folded in and the epilogue fused.

For a conv (weight W, bias b or 0) followed by eval-mode BatchNorm (gamma, beta, running mean mu,
running var s2, eps), with scale = gamma / sqrt(s2 + eps):

    BN(conv(x; W, b)) = conv(x; W * scale[:, None, None, None], beta + (b - mu) * scale)

The fold is computed in float64 and rounded once to the weights' dtype. On a CPU the folded weight is
also prepared once: the 3x3 stride-1 convs (HRNet's blocks) run Winograd F(2x2, 3x3) on a backend
with a ``winograd_conv`` kernel (fp32 maps; the transformed weights are made once); every other conv
runs oneDNN with its weights reordered once per input shape into the blocked layout oneDNN picks:
through oneDNN's primitive API directly (``ops/onednn_conv.py``: channels_last maps, no residual or
one added in place; the primitive is made once too) where the pip-installed oneDNN is there, else
through torch's fused call with the weight prepacked (``prepack_weight``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..ops import conv_bias_act, cpu_features, requested_backend, resolve_backend, winograd_panel
from ..ops.conv_act import prepack_weight
from ..ops.onednn_conv import onednn_conv, onednn_conv_applies, prepare_onednn_conv
from ..ops.registry import fused_kernel

MAX_PACKED_SHAPES = 4  # prepacked copies kept per conv (one per input shape seen); more clears them
# Map dtypes whose 3x3 stride-1 convs run winograd_conv (faster than oneDNN's direct conv on a CPU,
# benchmarks/RESULTS.md); bf16 stays direct: the kernel computes 16-bit maps in fp32.
WINOGRAD_DTYPES = (torch.float32,)
# Fewer output pixels (N * H * W) than this, per vector width (cpu_features.vector_isa), and a conv
# is bound by reading its weights from memory, which Winograd's transformed weights make 16/9 larger:
# oneDNN's direct conv runs instead. Measured inside the W32 pose forward on 2-core AMD EPYCs: with
# AVX-512, 128 channels at 16x12, batch 1, 0.9x, so 256; with AVX2, when the kernel's 128-channel
# blocks held two register tiles (since replaced by column-blocked weights, faster still there), the
# forward at batch 1 took 0.89-0.95x the time at 192 (16x12 at batch 1 on Winograd) as at 256 (four
# interleaved runs), and at batch 4 0.96x; 48 instead of 192 made no difference after the change
# (1.007x and 0.970x, two runs). Other widths: 256.
WINOGRAD_MIN_PIXELS = {"AVX512": 256, "AVX2": 192}
WINOGRAD_KEY = ("winograd",)  # where FoldedConv keeps its transformed weights beside the prepacked ones


def winograd_min_pixels() -> int:
    """WINOGRAD_MIN_PIXELS for this CPU's vector width (256 for widths it does not list)."""
    return WINOGRAD_MIN_PIXELS.get(cpu_features.vector_isa(), 256)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[Tensor, Tensor]:
    """(weight, bias) of the single conv equal to ``bn(conv(x))`` in eval mode (conv alone without bn)."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    b = b.to(w.device)
    if bn is not None:
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * scale[:, None, None, None]
        b = bn.bias.detach().double() + (b - bn.running_mean.double()) * scale
    return w.to(conv.weight.dtype), b.to(conv.weight.dtype)


class FoldedConv(nn.Module):
    """``act(conv(x) + residual)`` with BatchNorm folded in: one fused library call per forward.

    forward(x (N, C_in, H, W), residual (N, C_out, H', W') or None, accumulate=False)
    -> (N, C_out, H', W').

    ``backend`` (None: the global choice; set by ``HRNet.backend``) picks between the fused kernels
    and the plain composition (``"reference"``), as for the fused ops.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, relu: bool = False):
        super().__init__()
        if not self.supports(conv):
            raise ValueError(
                f"FoldedConv supports square-kernel, square-stride, zero-padded, undilated, ungrouped convs, got {conv}"
            )
        weight, bias = fold_conv_bn(conv, bn)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.relu = conv.stride[0], conv.padding[0], relu
        self.backend: str | None = None
        # (input shape, dtype) -> oneDNN's prepacked weight; ("onednn", input shape, dtype, residual?) ->
        # the oneDNN primitive; WINOGRAD_KEY -> the transformed weights
        self._packed: dict[tuple, object] = {}
        self._packed_from: tuple | None = None  # the weight's and bias's (storage, version) they came from
        self._winograd_shape: tuple = (None, False)  # (weight shape, whether winograd_conv fits it)

    @staticmethod
    def supports(conv: nn.Module) -> bool:
        """Whether ``conv`` is a conv this computes: an ``nn.Conv2d`` with a square kernel, stride and
        padding, zero padding, undilated and ungrouped."""
        if not isinstance(conv, nn.Conv2d):
            return False
        k, stride, padding = conv.kernel_size, conv.stride, conv.padding
        return (
            conv.groups == 1
            and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros"
            and k[0] == k[1]
            and stride[0] == stride[1]
            and not isinstance(padding, str)
            and padding[0] == padding[1]
        )

    def __getstate__(self):
        """Copies and pickles leave the prepared weights behind (oneDNN's prepacked tensors are
        opaque and cannot be copied); they are made again on first use."""
        state = super().__getstate__().copy()
        state["_packed"], state["_packed_from"] = {}, None
        return state

    def _current(self) -> dict[tuple, object]:
        """The prepared weights, emptied when the weight or the bias (which a oneDNN primitive
        copies) changed since they were made."""
        params_id = tuple(
            (p.dtype, p.device, p.data_ptr(), None if p.is_inference() else p._version)  # inference: no versions
            for p in (self.weight, self.bias)
        )
        if params_id != self._packed_from:
            self._packed.clear()
            self._packed_from = params_id
        return self._packed

    def _prepared(self, key: tuple, make: Callable[[], object]):
        """``prepared[key]``, made by ``make()`` on first use (None: nothing to keep); more than
        MAX_PACKED_SHAPES entries clear them all."""
        prepared = self._current()
        value = prepared.get(key)
        if value is None:
            value = make()
            if value is not None:
                if len(prepared) >= MAX_PACKED_SHAPES:
                    prepared.clear()
                prepared[key] = value
        return value

    def winograd_kernel(self, x: Tensor):
        """The ``winograd_conv`` kernel to run this conv on ``x`` with, or None where it does not
        apply (not a 3x3 stride-1 conv with at least as many output channels as input channels, a
        dtype outside WINOGRAD_DTYPES, not a CPU, fewer output pixels than winograd_min_pixels(),
        compiling or exporting, or a backend without the kernel)."""
        c_out, c_in, k, _ = shape = self.weight.shape
        if shape != self._winograd_shape[0]:  # checked again only when the weight is replaced
            # a narrowing conv (256 -> 32) stays direct: its input transforms cost more than Winograd saves
            self._winograd_shape = (shape, k == 3 and c_out >= c_in and self.stride == 1 and self.padding == 1)
        if (
            not self._winograd_shape[1]
            or x.dtype not in WINOGRAD_DTYPES
            or x.dtype != self.weight.dtype
            or x.device.type != "cpu"
            or torch.compiler.is_compiling()
            or x.shape[0] * x.shape[2] * x.shape[3] < winograd_min_pixels()
        ):
            return None
        return fused_kernel("winograd_conv", resolve_backend(self.backend, x.device), x)  # reference: exporting

    def packed_weight(self, x: Tensor) -> Tensor | None:
        """The weight prepacked for oneDNN for inputs shaped like ``x`` (made on the first such call,
        remade when the weight changes), or None where no prepacked path applies."""
        shape = tuple(x.shape)
        return self._prepared(
            (shape, x.dtype),
            lambda: prepack_weight(self.weight, stride=self.stride, padding=self.padding, input_shape=shape),
        )

    def onednn_primitive(self, x: Tensor, residual: Tensor | None, accumulate: bool):
        """The conv as a oneDNN primitive for these operands (made on the first such call, remade when
        the weight changes), or None where the direct oneDNN path does not apply: a residual that is
        not ``accumulate`` (the result must not go into it), operands outside
        :func:`~hrnet_fast.ops.onednn_conv.onednn_conv_applies`, the reference backend, compiling or
        exporting."""
        if (
            (residual is not None and not accumulate)
            or torch.compiler.is_compiling()
            or not onednn_conv_applies(x, self.weight, residual)
            or requested_backend(self.backend) == "reference"  # also while exporting
        ):
            return None
        shape, with_residual = tuple(x.shape), residual is not None
        return self._prepared(
            ("onednn", shape, x.dtype, with_residual),
            lambda: prepare_onednn_conv(
                self.weight,
                self.bias,
                stride=self.stride,
                padding=self.padding,
                input_shape=shape,
                relu=self.relu,
                residual=with_residual,
            ),
        )

    def forward(self, x: Tensor, residual: Tensor | None = None, *, accumulate: bool = False) -> Tensor:
        """``accumulate``: ``residual`` is not needed afterwards, and may hold the result."""
        winograd = self.winograd_kernel(x)
        if winograd is not None:
            panel = self._prepared(WINOGRAD_KEY, lambda: winograd_panel(self.weight))
            return winograd(x, self.weight, panel, self.bias, residual, self.relu)
        primitive = self.onednn_primitive(x, residual, accumulate)
        if primitive is not None:
            return onednn_conv(primitive, x, residual)
        packed = None if torch.compiler.is_compiling() or x.dtype != self.weight.dtype else self.packed_weight(x)
        return conv_bias_act(
            x,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            residual=residual,
            relu=self.relu,
            backend=self.backend,
            packed=packed,
            accumulate=accumulate,
        )

    def extra_repr(self) -> str:
        c_out, c_in, k, _ = self.weight.shape
        return f"{c_in}, {c_out}, kernel_size={k}, stride={self.stride}, padding={self.padding}, relu={self.relu}"
