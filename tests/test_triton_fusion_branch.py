"""Level 2 on the triton backend: the fused ``fusion_branch`` op against its reference composition."""

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

from hrnet_fast.kernels import fusion_branch as kernels
from hrnet_fast.layout import weight_layout
from hrnet_fast.ops import fusion_branch, fusion_branch_reference
from hrnet_fast.testing import assert_matches

OP = torch.ops.hrnet_fast
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]
# base shape, down-path input shapes (stride-2 convs onto base), low-path shapes; channels off 16
CASES = {
    "middle": ((1, 24, 7, 5), [(1, 16, 13, 9), (1, 20, 14, 10)], [(1, 40, 4, 3)]),
    "first": ((2, 16, 9, 11), [], [(2, 32, 5, 6), (2, 48, 3, 3), (2, 8, 1, 2)]),
    "last": ((1, 48, 4, 3), [(1, 16, 8, 6), (1, 32, 7, 5), (1, 8, 8, 5)], []),
}


def _inputs(case, dtype, device, fmt):
    base_shape, down_shapes, low_shapes = CASES[case]
    c = base_shape[1]
    base = fresh(base_shape, dtype, device, fmt)
    down = [fresh(s, dtype, device, fmt) for s in down_shapes]
    low = [fresh(s, dtype, device, fmt) for s in low_shapes]
    down_w = [(fresh((c, s[1], 3, 3), device=device) / (3 * s[1] ** 0.5)).to(dtype) for s in down_shapes]
    low_w = [(fresh((c, s[1], 1, 1), device=device) / s[1] ** 0.5).to(dtype) for s in low_shapes]
    return base, down, down_w, low, low_w, fresh((c,), dtype, device)


def _double(args):
    return [[t.double() for t in a] if isinstance(a, list) else a.double() for a in args]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("mode", "ac"), MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_writes_every_element_and_matches_the_reference(case, mode, ac, dtype, fmt, device):
    base, down, down_w, low, low_w, bias = _inputs(case, dtype, device, fmt)
    out = poisoned_like(base)
    packed = [weight_layout(w) for w in down_w], [weight_layout(w) for w in low_w]
    cl = fmt == torch.channels_last
    n, c, h, w = base.shape
    meta = kernels.launch_config(n * h * w, c, base.element_size(), mode == "bilinear", sm_count=1)
    kernels.launch_fusion_branch(out, base, down, packed[0], low, packed[1], bias, mode, ac, True, cl, meta)
    args = (base, down, down_w, low, low_w, bias)
    ref = fusion_branch_reference(*args, mode, ac, True)
    assert_matches(out, ref, fusion_branch_reference(*_double(args), mode, ac, True), "fusion_branch", tol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_op_takes_any_weight_layout_and_keeps_base_strides(device):
    base, down, down_w, low, low_w, bias = _inputs("middle", torch.float32, device, torch.channels_last)
    out = fusion_branch(base, down, down_w, low, low_w, bias, mode="bilinear", relu=False, backend="triton")
    ref = fusion_branch_reference(base, down, down_w, low, low_w, bias, "bilinear", False, False)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert out.stride() == base.stride() and (out < 0).any()  # relu=False keeps negatives


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_and_no_gradient(device):
    args = _inputs("middle", torch.float32, device, torch.contiguous_format)
    torch.library.opcheck(OP.fusion_branch_triton.default, (*args, "nearest", False, True))
    base = args[0].requires_grad_()
    out = OP.fusion_branch_triton(base, *args[1:], "nearest", False, True)
    with pytest.raises(RuntimeError, match="inference-only"):
        out.sum().backward()


def test_bad_inputs_are_refused_with_the_reason():
    base, down, down_w, low, low_w, bias = _inputs("middle", torch.float32, "cpu", torch.contiguous_format)
    with pytest.raises(ValueError, match=r"down\[0\] is \(12, 9\); a stride-2 conv of it is not base's \(7, 5\)"):
        fusion_branch(base, [down[0][..., :12, :], down[1]], down_w, low, low_w, bias)
    with pytest.raises(ValueError, match=r"low_weight\[0\] must have shape \(24, 40, 1, 1\)"):
        fusion_branch(base, down, down_w, low, [low_w[0][:, :39]], bias)
    with pytest.raises(TypeError, match=r"bias is torch.float16"):
        fusion_branch(base, down, down_w, low, low_w, bias.half())
    with pytest.raises(ValueError, match="2 down maps with 1 weights"):
        fusion_branch(base, down, down_w[:1], low, low_w, bias)


@pytest.mark.parametrize("device", DEVICES)
def test_float64_runs_the_reference_with_a_debug_line(device, caplog):
    args = _double(_inputs("first", torch.float32, device, torch.contiguous_format))
    with caplog.at_level("DEBUG", logger="hrnet_fast.ops.registry"):
        out = fusion_branch(*args, backend="triton")
    torch.testing.assert_close(out, fusion_branch_reference(*args, "nearest", False, True))
    assert "not torch.float64" in caplog.text
