"""``winograd_conv`` (3x3 stride-1 conv + bias + residual + ReLU by Winograd F(2x2, 3x3)): the cpp
backend's CPU kernel against the direct composition, and its use by ``FoldedConv``/``optimize()``.

Outputs are poisoned (torch's deterministic mode fills every fresh tensor with NaN), so an element
the kernel forgets to write fails; results are judged by :func:`hrnet_fast.testing.assert_matches`
(fp32 close to float64 with the tolerance of long dot products; fp16/bf16 at most twice as far from
float64 as the reference's own error).
"""

from __future__ import annotations

import pytest
import torch
from triton_helpers import FORMATS, fresh

from hrnet_fast import HRNet, optimize
from hrnet_fast.nn import FoldedConv, folded
from hrnet_fast.ops import cpu_features, winograd_conv, winograd_conv_reference, winograd_panel
from hrnet_fast.ops.registry import OpLibrary
from hrnet_fast.testing import assert_matches

pytestmark = pytest.mark.usefixtures("poisoned_outputs")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# (batch, C_in, H, W, C_out): odd sizes (half tiles at the bottom and right), channels that fill no
# vector (5, 20, 260) or tile (50, 40), one pixel, more tiles than a block of 12 across samples,
# 42 tiles (the last block partial) of 130 channels (10 column blocks of the panel in fp32, the last
# one partly zeros) and transformed weights over 2 MB (260 x 160 in fp32: the three-pass schedule).
SHAPES = [
    (2, 20, 13, 9, 50),
    (1, 5, 1, 1, 3),
    (3, 32, 8, 6, 64),
    (1, 16, 7, 30, 32),
    (1, 72, 11, 13, 130),
    (2, 260, 5, 7, 150),
]


def _op():
    return OpLibrary("hrnet_fast", "cpp").winograd_conv


def _inputs(shape, dtype, fmt=torch.channels_last, residual=True):
    n, c_in, h, w, c_out = shape
    x = fresh((n, c_in, h, w), dtype, fmt=fmt)
    weight = (fresh((c_out, c_in, 3, 3)) / (3 * c_in**0.5)).to(dtype)
    r = fresh((n, c_out, h, w), dtype, fmt=fmt) if residual else None
    return x, weight, winograd_panel(weight), fresh((c_out,), dtype), r


def _check(out, args, relu, what):
    ref = winograd_conv_reference(*args, relu)
    exact = winograd_conv_reference(*[a.double() if a is not None else None for a in args], relu)
    assert out.is_contiguous(memory_format=torch.channels_last) or out.shape[1] == 1 or out.shape[2:] == (1, 1)
    assert_matches(out, ref, exact, what, tol=1e-5 if out.dtype == torch.float32 else None)


@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "cl"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_kernel_writes_every_element_and_matches_the_direct_conv(dtype, shape, fmt):
    for residual, relu in [(True, True), (False, False)]:
        args = _inputs(shape, dtype, fmt, residual)
        out = _op()(*args, relu)
        _check(out, args, relu, f"residual={residual} relu={relu}")
        if not relu and out.numel() >= 64:
            assert (out < 0).any()  # kept, not clamped


@pytest.mark.parametrize("dtype, block", [(torch.float64, 8), (torch.float32, 16)])
def test_transformed_weights_have_the_documented_layout(dtype, block):
    """U = G g G^T per (C_out, C_in) at panel[co // B, xi, ci, co % B] (xi = 4 * row + column, B the
    channels of 64 bytes), C_out padded with zeros to a multiple of 32."""
    weight = fresh((40, 3, 3, 3), dtype)
    panel = winograd_panel(weight)
    g = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
    assert panel.shape == (64 // block, 16, 3, block) and panel.dtype == dtype and panel.is_contiguous()
    by_channel = panel.permute(1, 2, 0, 3).reshape(16, 3, 64)  # [xi][ci][co]
    for co, ci in [(0, 0), (block - 1, 1), (block, 2), (37, 2)]:
        want = (g @ weight[co, ci].double() @ g.T).to(dtype)
        torch.testing.assert_close(panel[co // block, :, ci, co % block].view(4, 4), want, rtol=0, atol=0)
        torch.testing.assert_close(by_channel[:, ci, co].view(4, 4), want, rtol=0, atol=0)
    assert (by_channel[:, :, 40:] == 0).all()
    assert winograd_panel(weight.float()).dtype == winograd_panel(weight.bfloat16()).dtype == torch.float32


def test_nan_spreads_to_the_tiles_whose_patch_holds_it():
    """A NaN input makes NaN every output the direct conv makes NaN, and stays inside the 2x2 tiles
    whose 4x4 input patch holds it (Winograd multiplies every patch value, 0 * NaN = NaN)."""
    x, weight, panel, bias, _ = _inputs((1, 8, 10, 10, 8), torch.float32, residual=False)
    x[0, 3, 5, 4] = float("nan")
    out = _op()(x, weight, panel, bias, None, False)
    direct = torch.isnan(winograd_conv_reference(x, weight, panel, bias, None, False))
    nan = torch.isnan(out)
    assert (nan | ~direct).all() and direct.any()
    rows, cols = nan[0].any(0).nonzero(as_tuple=True)
    assert rows.min() >= 4 and rows.max() <= 7 and cols.min() >= 2 and cols.max() <= 5  # tiles (2-3, 1-2)


def test_an_infinite_input_gives_nan_where_the_direct_conv_gives_inf():
    """The transforms subtract (inf - inf = NaN, as the op's docstring says): of the outputs the direct
    conv makes +-inf, some are NaN here and the others the same inf; every other output stays finite."""
    x, weight, panel, bias, _ = _inputs((1, 8, 10, 10, 8), torch.float32, residual=False)
    x[0, 3, 5, 4] = float("inf")
    out = _op()(x, weight, panel, bias, None, False)
    direct = winograd_conv_reference(x, weight, panel, bias, None, False)
    infinite = torch.isinf(direct)
    nan = torch.isnan(out[infinite])
    assert nan.any() and (nan | (out[infinite] == direct[infinite])).all()
    assert torch.isfinite(out[~infinite]).all()


def test_opcheck_and_no_gradient():
    args = _inputs((1, 8, 5, 6, 12), torch.float32)
    torch.library.opcheck(_op().default, (*args, True))
    x = args[0].requires_grad_()
    with pytest.raises(RuntimeError, match="inference-only"):
        _op()(x, *args[1:], True).sum().backward()


def test_bad_inputs_are_refused_with_the_reason():
    x, weight, panel, bias, r = _inputs((1, 8, 5, 6, 12), torch.float32)
    with pytest.raises(ValueError, match=r"panel must have shape \(2, 16, 8, 16\), got \(16, 8, 32\)"):
        winograd_conv(x, weight, torch.zeros(16, 8, 32), bias)  # the layout before column blocks
    with pytest.raises(TypeError, match="panel must be torch.float32 on cpu, got torch.float64"):
        winograd_conv(x, weight, panel.double(), bias)
    with pytest.raises(ValueError, match=r"weight must have shape \(12, 8, 3, 3\)"):
        winograd_conv(x, weight[:, :7], panel, bias)
    with pytest.raises(TypeError, match="bias must be torch.float32"):
        winograd_conv(x, weight, panel, bias.half())
    with pytest.raises(ValueError, match=r"residual has batch 2"):
        winograd_conv(x, weight, panel, bias, residual=torch.cat([r, r]))
    with pytest.raises(ValueError, match="winograd_panel: weight must be"):
        winograd_panel(weight[..., :2])


def test_the_cpp_op_checks_its_own_inputs():
    """Called directly (not through hrnet_fast.ops), the C++ op refuses what its kernel cannot take."""
    x, weight, panel, bias, r = _inputs((1, 8, 5, 6, 12), torch.float32)
    op = _op()
    with pytest.raises(RuntimeError, match=r"panel must be a contiguous Float \(2, 16, 8, 16\) tensor"):
        op(x, weight, panel[:, :, :4], bias, r, True)
    with pytest.raises(RuntimeError, match=r"panel must be a contiguous Float \(2, 16, 8, 16\) tensor"):
        op(x, weight, panel.transpose(0, 1).contiguous().transpose(0, 1), bias, r, True)
    with pytest.raises(RuntimeError, match=r"weight must be \(C_out, 8, 3, 3\)"):
        op(x, weight[..., :1, :1], panel, bias, r, True)
    with pytest.raises(RuntimeError, match=r"residual must be Float \[1, 12, 5, 6\]"):
        op(x, weight, panel, bias, r[:, :, :4], True)
    with pytest.raises(RuntimeError, match="weight and bias must be Float"):
        op(x, weight, panel, bias.double(), r, True)


def _folded_conv(c_in=16, c_out=24, kernel=3, stride=1):
    conv = torch.nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2)
    bn = torch.nn.BatchNorm2d(c_out).eval()
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2)
    return FoldedConv(conv, bn, relu=True)


def test_folded_conv_runs_winograd_for_3x3_stride_1_fp32_on_cpp_only(monkeypatch):
    conv = _folded_conv()
    x = fresh((2, 16, 16, 8), fmt=torch.channels_last)
    assert conv.winograd_kernel(x) is not None
    assert conv.winograd_kernel(x.bfloat16()) is None  # bf16 stays on oneDNN's direct conv
    least = folded.winograd_min_pixels()  # fewer pixels: weight-bound
    assert conv.winograd_kernel(fresh((1, 16, 1, least - 1), fmt=torch.channels_last)) is None
    assert conv.winograd_kernel(fresh((1, 16, 1, least), fmt=torch.channels_last)) is not None
    monkeypatch.setattr(cpu_features, "vector_isa", lambda: "AVX512")
    assert conv.winograd_kernel(fresh((1, 16, 1, 192), fmt=torch.channels_last)) is None  # 256 with AVX-512
    assert _folded_conv(c_in=32, c_out=16).winograd_kernel(fresh((2, 32, 16, 8))) is None  # narrowing
    assert _folded_conv(stride=2).winograd_kernel(x) is None and _folded_conv(kernel=1).winograd_kernel(x) is None
    conv.backend = "reference"
    assert conv.winograd_kernel(x) is None
    conv.backend = "cpp"
    conv.weight = torch.nn.Parameter(conv.weight[:, :, :1, :1].contiguous(), requires_grad=False)
    assert conv.winograd_kernel(x) is None  # the shape check follows a replaced weight


def test_folded_conv_remakes_the_transformed_weights_when_the_weight_changes():
    conv = _folded_conv()
    x, r = fresh((1, 16, 16, 16), fmt=torch.channels_last), fresh((1, 24, 16, 16))
    with torch.no_grad():
        before = conv(x, r)
        conv.weight.mul_(-1)  # in place: a new version of the same storage
        after = conv(x, r)
    expected = winograd_conv_reference(x, conv.weight, None, conv.bias, r, True)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, after)


def test_optimize_fp32_on_cpp_matches_the_model_and_runs_winograd():
    torch.manual_seed(0)
    model = HRNet("w18_small_v1", head="pose").eval()
    x = fresh((1, 3, 128, 96))
    engine = optimize(model, backend="cpp")
    with torch.profiler.profile() as prof:
        out = engine(x)
    calls = {e.key: e.count for e in prof.key_averages()}
    assert calls.get("hrnet_fast::winograd_conv_cpp", 0) > 10
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), atol=1e-4, rtol=1e-4)
