"""What this CPU computes natively, as torch and its oneDNN see it (asked once, on first use)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively on this CPU (AVX-512 BW/VL/DQ, AVX512-BF16,
    AMX or AVX-NE-CONVERT). Elsewhere (an AVX2-only CPU, or a VM that hides AVX-512) oneDNN refuses
    them and torch's own bfloat16 convolutions run several times slower than float32 ones."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def onednn_native(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs ``dtype`` natively here: every dtype but bfloat16, and bfloat16 where
    :func:`native_bf16`."""
    return dtype != torch.bfloat16 or native_bf16()


@functools.cache
def vector_isa() -> str:
    """torch's name for the widest vector instructions it uses on this CPU: "AVX512", "AVX2" (or
    "DEFAULT", "ZVECTOR", ...); the C++ kernels, built with -march=native, use the same width."""
    return torch.backends.cpu.get_cpu_capability()
