"""Inference-time convolutions with BatchNorm folded in and the epilogue fused.

For a conv (weight W, bias b or 0) followed by eval-mode BatchNorm (gamma, beta, running mean mu,
running var s2, eps), with scale = gamma / sqrt(s2 + eps):

    BN(conv(x; W, b)) = conv(x; W * scale[:, None, None, None], beta + (b - mu) * scale)

The fold is computed in float64 and rounded once to the weights' dtype. On a CPU the folded weight is
also prepacked once per input shape into oneDNN's blocked layout (see ``prepack_weight``), so the
fused library call does not reorder it on every forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops import conv_bias_act
from ..ops.conv_act import prepack_weight

MAX_PACKED_SHAPES = 4  # prepacked copies kept per conv (one per input shape seen); more clears them


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
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, relu: bool = False):
        super().__init__()
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.stride[0] != conv.stride[1]:
            raise ValueError(f"FoldedConv supports square-stride, undilated, ungrouped convs, got {conv}")
        weight, bias = fold_conv_bn(conv, bn)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.relu = conv.stride[0], conv.padding[0], relu
        self._packed: dict[tuple, Tensor] = {}  # (input shape, dtype) -> prepacked weight
        self._packed_from: tuple | None = None  # the weight (storage, version) they were packed from

    def packed_weight(self, x: Tensor) -> Tensor | None:
        """The weight prepacked for oneDNN for inputs shaped like ``x`` (made on the first such call,
        remade when the weight changes), or None where no prepacked path applies."""
        w = self.weight
        version = None if w.is_inference() else w._version  # inference tensors count no versions
        weight_id = (w.dtype, w.device, w.data_ptr(), version)
        if weight_id != self._packed_from:
            self._packed.clear()
            self._packed_from = weight_id
        key = (tuple(x.shape), x.dtype)
        packed = self._packed.get(key)
        if packed is None:
            packed = prepack_weight(w, stride=self.stride, padding=self.padding, input_shape=key[0])
            if packed is not None:
                if len(self._packed) >= MAX_PACKED_SHAPES:
                    self._packed.clear()
                self._packed[key] = packed
        return packed

    def forward(self, x: Tensor, residual: Tensor | None = None, *, accumulate: bool = False) -> Tensor:
        """``accumulate``: ``residual`` is not needed afterwards, and may hold the result."""
        packed = None if torch.compiler.is_compiling() or x.dtype != self.weight.dtype else self.packed_weight(x)
        return conv_bias_act(
            x,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            residual=residual,
            relu=self.relu,
            packed=packed,
            accumulate=accumulate,
        )

    def extra_repr(self) -> str:
        c_out, c_in, k, _ = self.weight.shape
        return f"{c_in}, {c_out}, kernel_size={k}, stride={self.stride}, padding={self.padding}, relu={self.relu}"
