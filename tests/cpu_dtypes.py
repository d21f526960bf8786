"""The dtypes oneDNN's CPU convolutions take on this machine, as test parameters: bfloat16 only where
the CPU has it natively (elsewhere oneDNN refuses it and the reference runs instead, which
test_optimize.py's test_bf16_without_native_support_* covers on every CPU)."""

from __future__ import annotations

import pytest
import torch

from hrnet_fast.ops.cpu_features import native_bf16

ONEDNN_DTYPES = [
    torch.float32,
    pytest.param(
        torch.bfloat16,
        marks=pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16: oneDNN refuses it"),
    ),
]
