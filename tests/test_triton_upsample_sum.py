"""Level 1 on the triton backend: ``upsample_sum`` forward and backward kernels against the reference."""

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

from hrnet_fast import BackendUnavailableError
from hrnet_fast.kernels import interp as adjoint
from hrnet_fast.kernels import upsample_sum as kernels
from hrnet_fast.ops import interp as ref_interp
from hrnet_fast.ops import registry, upsample_sum
from hrnet_fast.ops import upsample_sum_op as sum_mod
from hrnet_fast.testing import assert_matches

OP = torch.ops.hrnet_fast

# (mode, align_corners, base shape, low sizes, number of same-resolution addends, relu)
CASES = [
    ("nearest", False, (1, 5, 13, 9), [(7, 5), (4, 3), (2, 2)], 3, True),  # sizes that do not divide
    ("nearest", False, (2, 3, 16, 12), [(8, 6), (4, 3), (2, 2)], 0, False),  # exact halvings, no ReLU
    ("nearest", False, (1, 2, 5, 7), [(9, 11), (5, 7)], 1, True),  # a larger and an equal "low" map
    ("bilinear", False, (1, 4, 11, 7), [(6, 4), (3, 2)], 1, True),
    ("bilinear", False, (2, 3, 16, 12), [(8, 6), (1, 1)], 2, False),
    ("bilinear", True, (2, 3, 9, 13), [(5, 7), (2, 1)], 2, True),
    ("bilinear", True, (1, 2, 7, 5), [(7, 5), (3, 3)], 0, False),
]
CASE_IDS = [f"{m}{'-ac' if a else ''}-{'x'.join(map(str, s))}-s{k}{'-relu' if r else ''}" for m, a, s, _, k, r in CASES]
# Backward in the interpreter is the slow part: every case in fp32, one case per mode in fp16/bf16.
BACKWARD = [pytest.param(c, torch.float32, id=f"{i}-float32") for c, i in zip(CASES, CASE_IDS, strict=True)] + [
    pytest.param(CASES[k], dtype, id=f"{CASE_IDS[k]}-{str(dtype)[6:]}")
    for k in (0, 3, 5)
    for dtype in (torch.float16, torch.bfloat16)
]
# One layout per case, alternating.
CASE_LAYOUTS = [
    pytest.param(c, FORMATS[k % 2], id=f"{i}-{('nchw', 'cl')[k % 2]}")
    for k, (c, i) in enumerate(zip(CASES, CASE_IDS, strict=True))
]


def _inputs(case, dtype, device, fmt, grad=False):
    _, _, shape, low_hw, num_same, _ = case
    n, c = shape[:2]
    base = fresh(shape, dtype, device, fmt, grad)
    same = [fresh(shape, dtype, device, fmt, grad) for _ in range(num_same)]
    low = [fresh((n, c, *hw), dtype, device, fmt, grad) for hw in low_hw]
    return base, same, low


def _double(ts):
    return [t.double() for t in ts]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_kernel_writes_every_element_and_matches_the_reference(case, dtype, fmt, device):
    mode, ac, _, _, _, relu = case
    base, same, low = _inputs(case, dtype, device, fmt)
    out = poisoned_like(base)
    kernels.launch_upsample_sum(out, base, same, low, mode, ac, relu, fmt == torch.channels_last)
    ref = sum_mod.upsample_sum_reference(base, same, low, mode, ac, relu)
    ref64 = sum_mod.upsample_sum_reference(*_double([base]), _double(same), _double(low), mode, ac, relu)
    assert_matches(out, ref, ref64, "upsample_sum")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "cl"])
@pytest.mark.parametrize(("case", "dtype"), BACKWARD)
def test_backward_kernels_write_every_element_and_match_the_reference(case, dtype, fmt, device):
    mode, ac, shape, low_hw, _, relu = case
    grad, out = fresh(shape, dtype, device, fmt), fresh(shape, dtype, device, fmt)
    grad_base = poisoned_like(grad)
    grad_low = [poisoned_like(grad, (*shape[:2], *hw)) for hw in low_hw]
    kernels.launch_upsample_sum_backward(grad_base, grad_low, grad, out, mode, ac, relu, fmt == torch.channels_last)
    flat_hw = [s for hw in low_hw for s in hw]
    ref_base, ref_low = sum_mod.upsample_sum_backward_reference(grad, out, flat_hw, mode, ac, relu)
    ref64 = sum_mod.upsample_sum_backward_reference(grad.double(), out.double(), flat_hw, mode, ac, relu)
    for k, (got, ref, want) in enumerate(
        zip([grad_base, *grad_low], [ref_base, *ref_low], [ref64[0], *ref64[1]], strict=True)
    ):
        assert_matches(got, ref, want, f"gradient {k}", tol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("case", "fmt"), CASE_LAYOUTS)
def test_autograd_through_the_op_matches_autograd_through_the_reference(case, fmt, device):
    mode, ac, _, _, _, relu = case
    base, same, low = _inputs(case, torch.float32, device, fmt, grad=True)
    inputs = [base, *same, *low]
    out = upsample_sum(base, same, low, mode=mode, align_corners=ac, relu=relu, backend="triton")
    ref = sum_mod.upsample_sum_reference(base, same, low, mode, ac, relu)
    assert out.stride() == base.stride()
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    g = fresh(out.shape, device=device)
    got, want = torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == inputs[k].shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"gradient of input {k}")


def _adjoint_sizes():
    """(input, output) size pairs two at a time (rows, columns), a steep ratio with a shallow one."""
    ins, outs = [1, 2, 3, 5, 8, 13], [1, 2, 3, 7, 9, 16, 25]
    pairs = sorted(((i, o) for i in ins for o in outs), key=lambda p: p[1] / p[0])
    return [(pairs[k], pairs[-1 - k]) for k in range(len(pairs) // 2)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("mode", "ac"), [("nearest", False), ("bilinear", False), ("bilinear", True)])
def test_adjoint_window_covers_every_size_pair(mode, ac, device):
    """Every (input, output) size pair of both axes: the gather visits exactly the right outputs."""
    for (h, big_h), (w, big_w) in _adjoint_sizes():
        g = fresh((1, 3, big_h, big_w), torch.float64, device).float()
        out = poisoned_like(g, (1, 3, h, w))
        adjoint.interp_adjoint(out, g, 0, mode, ac, False)
        want = ref_interp.interpolate_adjoint(g.double(), (h, w), mode, ac)
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5, msg=f"{(h, w)} <- {(big_h, big_w)}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("mode", "ac"), [("nearest", False), ("bilinear", False), ("bilinear", True)])
def test_forward_index_math_is_interpolate_for_every_size_pair(mode, ac, device):
    for (h, big_h), (w, big_w) in _adjoint_sizes():
        base = torch.zeros(1, 2, big_h, big_w, device=device)
        low = fresh((1, 2, h, w), device=device)
        out = poisoned_like(base)
        kernels.launch_upsample_sum(out, base, [], [low], mode, ac, False, False)
        want = torch.nn.functional.interpolate(low, (big_h, big_w), mode=mode, align_corners=ac if ac else None)
        torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6, msg=f"{(h, w)} -> {(big_h, big_w)}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("case", "fmt"), [CASE_LAYOUTS[1], CASE_LAYOUTS[6]])
def test_opcheck(case, fmt, device):
    mode, ac, _, _, _, relu = case
    base, same, low = _inputs(case, torch.float32, device, fmt, grad=True)
    torch.library.opcheck(OP.upsample_sum_triton.default, (base, same, low, mode, ac, relu))
    g = fresh(base.shape, device=device, fmt=fmt)
    out = OP.upsample_sum_triton(base, same, low, mode, ac, relu)
    low_hw = [s for t in low for s in t.shape[-2:]]
    torch.library.opcheck(OP.upsample_sum_backward_triton.default, (g, out.detach(), low_hw, mode, ac, relu))


@pytest.mark.parametrize("device", DEVICES)
def test_float64_runs_the_reference_with_a_debug_line(device, caplog):
    base, same, low = _inputs(CASES[0], torch.float64, device, torch.contiguous_format)
    with caplog.at_level("DEBUG", logger=registry.__name__):
        out = upsample_sum(base, same, low, backend="triton")
    torch.testing.assert_close(out, sum_mod.upsample_sum_reference(base, same, low, "nearest", False, True))
    assert "not torch.float64" in caplog.text


@pytest.mark.skipif(registry.unavailable_reason("triton") is not None, reason="the triton backend is unavailable")
def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match="'triton' does not run on cpu tensors here"):
        upsample_sum(torch.randn(1, 2, 4, 4), backend="triton")
