"""Triton kernels of hrnet_fast, installed as ``hrnet_fast.kernels``.

Kernels here know tensors and pointers, never modules; ``hrnet_fast.ops`` is the only caller. This
file imports no triton: the kernel modules (``interp``, ``upsample_sum``, ``upsample_concat``,
``fusion_branch``) do, and are imported on the first launch.
"""

from __future__ import annotations

import os

import torch


def interpreted() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``), as Triton reads it."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def check_device(op: str, t: torch.Tensor) -> None:
    """Compiled Triton kernels take CUDA tensors; the interpreter takes CPU ones too."""
    if t.device.type != "cuda" and not interpreted():
        raise ValueError(
            f"{op}: the Triton kernels need CUDA tensors, got {t.device} (TRITON_INTERPRET=1 runs them "
            "on the CPU, slowly, for tests)"
        )
