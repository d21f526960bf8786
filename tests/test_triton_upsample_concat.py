"""``upsample_concat`` on the triton backend: forward and backward kernels against the reference."""

from __future__ import annotations

import pytest
import torch
from triton_helpers import (
    DEVICES,
    DTYPES,
    FORMATS,
    exact_fp32,  # noqa: F401  (an autouse fixture)
    fresh,
    poisoned_like,
)

from hrnet_fast.kernels import upsample_concat as kernels
from hrnet_fast.ops import upsample_concat
from hrnet_fast.ops import upsample_concat_op as concat_mod
from hrnet_fast.testing import assert_matches

OP = torch.ops.hrnet_fast
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]
SHAPES = [  # (N, C_k, H_k, W_k): odd sizes, a 1x1 branch, one branch alone
    [(1, 3, 11, 9), (1, 4, 6, 5), (1, 2, 3, 3), (1, 5, 1, 1)],
    [(2, 4, 16, 12), (2, 6, 8, 6)],
    [(1, 3, 7, 5)],
]


def _inputs(shapes, dtype, device, fmt, grad=False):
    return [fresh(s, dtype, device, fmt, grad) for s in shapes]


# Every dtype for the four-branch case; the others in fp32.
FORWARD = [pytest.param(SHAPES[0], dtype, id=f"4-branches-{str(dtype)[6:]}") for dtype in DTYPES] + [
    pytest.param(SHAPES[1], torch.float32, id="2-branches-float32"),
    pytest.param(SHAPES[2], torch.float32, id="1-branch-float32"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "cl"])
@pytest.mark.parametrize(("mode", "ac"), MODES)
@pytest.mark.parametrize(("shapes", "dtype"), FORWARD)
def test_forward_kernel_writes_every_element_and_matches_the_reference(shapes, mode, ac, dtype, fmt, device):
    xs = _inputs(shapes, dtype, device, fmt)
    n, _, h, w = shapes[0]
    out = poisoned_like(xs[0], (n, sum(s[1] for s in shapes), h, w))
    kernels.launch_upsample_concat(out, xs, mode, ac, fmt == torch.channels_last)
    ref = concat_mod.upsample_concat_reference(xs, mode, ac)
    assert_matches(out, ref, concat_mod.upsample_concat_reference([x.double() for x in xs], mode, ac), "concat")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("mode", "ac"), MODES)
def test_backward_kernels_write_every_element_and_match_the_reference(mode, ac, dtype, fmt, device):
    shapes = SHAPES[0]
    n, _, h, w = shapes[0]
    channels, hw = [s[1] for s in shapes], [d for s in shapes for d in s[2:]]
    grad = fresh((n, sum(channels), h, w), dtype, device, fmt)
    grads = [poisoned_like(grad, s) for s in shapes]
    kernels.launch_upsample_concat_backward(grads, grad, mode, ac, fmt == torch.channels_last)
    refs = concat_mod.upsample_concat_backward_reference(grad, channels, hw, mode, ac)
    refs64 = concat_mod.upsample_concat_backward_reference(grad.double(), channels, hw, mode, ac)
    for k, (got, ref, want) in enumerate(zip(grads, refs, refs64, strict=True)):
        assert_matches(got, ref, want, f"gradient {k}", tol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("mode", "ac", "fmt"), [("nearest", False, torch.channels_last), ("bilinear", True, None)])
def test_autograd_opcheck_and_dispatch(mode, ac, fmt, device):
    xs = _inputs(SHAPES[0], torch.float32, device, fmt or torch.contiguous_format, grad=True)
    out = upsample_concat(xs, mode=mode, align_corners=ac, backend="triton")
    ref = concat_mod.upsample_concat_reference(xs, mode, ac)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert out.is_contiguous(memory_format=fmt or torch.contiguous_format)  # xs[0]'s layout, as the fake says
    g = fresh(out.shape, device=device)
    for a, b in zip(torch.autograd.grad(out, xs, g), torch.autograd.grad(ref, xs, g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.library.opcheck(OP.upsample_concat_triton.default, (xs, mode, ac))
    channels, hw = [x.shape[1] for x in xs], [s for x in xs for s in x.shape[-2:]]
    torch.library.opcheck(OP.upsample_concat_backward_triton.default, (g, channels, hw, mode, ac))
