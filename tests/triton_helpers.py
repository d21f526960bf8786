"""Shared by the Triton tests: where they run, the dtypes and layouts, fresh and poisoned tensors.

Every Triton test runs on the CPU under the interpreter (TRITON_INTERPRET=1, set by conftest when
there is no GPU) and on CUDA where a GPU is present. Results are judged by
:func:`hrnet_fast.testing.assert_matches` (fp32 close to a float64 reference; fp16/bf16 at most
twice as far from it as the reference implementation itself is at that dtype).
"""

from __future__ import annotations

import pytest
import torch

import hrnet_fast
from hrnet_fast.kernels import interpreted

# Probing the backend defines its custom ops (torch.ops.hrnet_fast.<op>_triton) when it is usable.
TRITON_UNAVAILABLE = hrnet_fast.backend_status()["triton"]

DEVICES = [
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(not interpreted(), reason="Triton runs on the CPU only when interpreted"),
    ),
    pytest.param("cuda", marks=pytest.mark.cuda),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 references without TF32 (cuDNN convs use it by default on GPUs; the kernels do not)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


FORMATS = [torch.contiguous_format, torch.channels_last]


def fresh(shape, dtype=torch.float32, device="cpu", fmt=torch.contiguous_format, grad=False) -> torch.Tensor:
    """New standard-normal data (never zeros) in the given layout."""
    t = torch.randn(shape, device=device).to(dtype).contiguous(memory_format=fmt)
    return t.requires_grad_(grad)


def poisoned_like(t: torch.Tensor, shape=None) -> torch.Tensor:
    """A NaN-filled buffer with t's dtype, device and layout, so unwritten elements show."""
    fmt = torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() else None
    out = torch.full(shape or t.shape, float("nan"), dtype=t.dtype, device=t.device)
    return out.contiguous(memory_format=fmt) if fmt else out
