"""Shared by the Triton tests: where they run, the dtypes and layouts, and how results are judged.

Every Triton test runs on the CPU under the interpreter (TRITON_INTERPRET=1, set by conftest when
there is no GPU) and on CUDA where a GPU is present. Judging (DESIGN.md): fp32 results must be
close to a float64 reference; fp16/bf16 results must be at most twice as far from the float64
reference as the reference implementation itself is at that dtype.
"""

from __future__ import annotations

import pytest
import torch

from hrnet_fast.kernels import interpreted

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


def judge(got: torch.Tensor, ref_same_dtype: torch.Tensor, ref64: torch.Tensor, fp32_tol=2e-6, what="") -> None:
    """fp32: max |got - ref64| <= tol * max(1, max |ref64|) (relative to the data's scale, since sums
    cancel); fp16/bf16: max error at most 2x the reference implementation's own."""
    assert got.dtype == ref_same_dtype.dtype and got.shape == ref64.shape, what
    assert not got.isnan().any(), f"{what}: NaNs in the result"
    err = (got.double() - ref64).abs()
    if got.dtype in (torch.float32, torch.float64):
        bound = fp32_tol * max(1.0, ref64.abs().max().item())
        assert err.max().item() <= bound, f"{what}: fp32 error {err.max().item():.3g} > {bound:.3g}"
        return
    ref_err = (ref_same_dtype.double() - ref64).abs().max().item()
    assert err.max().item() <= 2 * ref_err + 1e-30, (
        f"{what}: {got.dtype} error {err.max().item():.3g} > 2 x the reference's own {ref_err:.3g}"
    )
