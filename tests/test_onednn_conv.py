"""Direct oneDNN convolutions (``hrnet_fast/ops/onednn_conv.py``, ``csrc/onednn/onednn_conv.cpp``)
against the reference composition, and ``FoldedConv``/``optimize()`` taking them where they apply.

Skipped where the pip-installed oneDNN is missing (CI installs it: ``hrnet-fast[onednn]``)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from cpu_dtypes import ONEDNN_DTYPES
from test_optimize import trained_like
from torch import nn

from hrnet_fast import HRNet, optimize
from hrnet_fast._ext import onednn_files
from hrnet_fast.nn import FoldedConv
from hrnet_fast.ops import conv_bias_act_reference
from hrnet_fast.ops.onednn_conv import DISABLE_ENV, onednn_conv, onednn_conv_status, prepare_onednn_conv
from hrnet_fast.testing import assert_matches

pytestmark = pytest.mark.skipif(
    onednn_files() is None or os.environ.get(DISABLE_ENV) == "0", reason="the pip-installed oneDNN is not here"
)
CL = torch.channels_last
# (N, C_in, H, W), C_out, k, stride, padding: odd sizes, 1x1 and 3x3, strides 1 and 2
SHAPES = [((1, 8, 9, 7), 16, 3, 1, 1), ((3, 24, 13, 10), 40, 3, 2, 1), ((2, 33, 5, 6), 17, 1, 1, 0)]


def _operands(shape, c_out, k, dtype, residual):
    x = torch.randn(shape).to(dtype).contiguous(memory_format=CL)
    w = (torch.randn(c_out, shape[1], k, k) / (k * shape[1] ** 0.5)).to(dtype)
    b = torch.randn(c_out).to(dtype)
    return x, w, b


def test_status_is_none_where_the_library_is_installed():
    assert onednn_conv_status() is None


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype", ONEDNN_DTYPES)
@pytest.mark.parametrize(("shape", "c_out", "k", "stride", "padding"), SHAPES)
def test_matches_the_reference(shape, c_out, k, stride, padding, dtype, residual, relu):
    x, w, b = _operands(shape, c_out, k, dtype, residual)
    out_hw = [(s + 2 * padding - k) // stride + 1 for s in shape[2:]]
    r = torch.randn(shape[0], c_out, *out_hw).to(dtype).contiguous(memory_format=CL) if residual else None
    ref = conv_bias_act_reference(x, w, b, stride, padding, r, relu)
    exact = conv_bias_act_reference(
        x.double(), w.double(), b.double(), stride, padding, None if r is None else r.double(), relu
    )
    conv = prepare_onednn_conv(
        w, b, stride=stride, padding=padding, input_shape=tuple(shape), relu=relu, residual=residual
    )
    assert conv.implementation()  # oneDNN's name for the kernel it picked
    target = None if r is None else r.clone()
    out = onednn_conv(conv, x, target)
    if residual:
        assert out.data_ptr() == target.data_ptr()  # added into the residual's memory
    assert out.is_contiguous(memory_format=CL) and out.shape == ref.shape
    if not relu:
        assert (out < 0).any()
    assert_matches(out, ref, exact, f"{dtype} residual={residual} relu={relu}", tol=1e-5)


def test_operands_outside_the_prepared_ones_are_refused():
    x, w, b = _operands((2, 8, 9, 7), 16, 3, torch.float32, False)
    conv = prepare_onednn_conv(w, b, stride=1, padding=1, input_shape=(2, 8, 9, 7), relu=True, residual=False)
    with pytest.raises(RuntimeError, match="the shape it was prepared for"):
        onednn_conv(conv, x[:1])
    with pytest.raises(RuntimeError, match="channels_last"):
        onednn_conv(conv, x.contiguous())
    with pytest.raises(RuntimeError, match="Float"):
        onednn_conv(conv, x.bfloat16())
    with pytest.raises(RuntimeError, match="without a residual"):
        onednn_conv(conv, x, torch.zeros(2, 16, 9, 7).contiguous(memory_format=CL))
    with pytest.raises(RuntimeError, match="input_shape must be"):
        prepare_onednn_conv(w, b, stride=1, padding=1, input_shape=(2, 9, 9, 7), relu=True, residual=False)


def _folded(k=3, stride=2, c_in=8, c_out=16, relu=True):
    bn = trained_like(nn.Sequential(nn.BatchNorm2d(c_out)))[0]
    return FoldedConv(nn.Conv2d(c_in, c_out, k, stride, k // 2), bn, relu=relu)


def _primitives(conv):
    return [key for key in conv._packed if key[0] == "onednn"]


@pytest.mark.parametrize("dtype", ONEDNN_DTYPES)
def test_folded_conv_takes_it_for_channels_last_maps_and_follows_weight_and_bias_updates(dtype):
    conv = _folded().to(dtype)  # stride 2: oneDNN (3x3 stride-1 fp32 convs run winograd_conv on cpp)
    x = torch.randn(2, 8, 9, 7).to(dtype).contiguous(memory_format=CL)
    with torch.no_grad():
        first = conv(x)
        assert _primitives(conv) == [("onednn", (2, 8, 9, 7), dtype, False)]
        conv.weight.mul_(-1.5)
        again = conv(x)
    ref = conv_bias_act_reference(x, conv.weight, conv.bias, 2, 1, None, True)
    exact = conv_bias_act_reference(x.double(), conv.weight.double(), conv.bias.double(), 2, 1, None, True)
    assert_matches(again, ref, exact, str(dtype), tol=1e-5)
    assert not torch.equal(first, again)
    assert len(_primitives(conv)) == 1  # remade for the new weight
    with torch.no_grad():
        conv.bias.add_(1.0)  # the primitive holds a copy of the bias: an in-place change remakes it too
        shifted = conv(x)
    ref = conv_bias_act_reference(x, conv.weight, conv.bias, 2, 1, None, True)
    exact = conv_bias_act_reference(x.double(), conv.weight.double(), conv.bias.double(), 2, 1, None, True)
    assert_matches(shifted, ref, exact, f"{dtype} new bias", tol=1e-5)


def test_folded_conv_keeps_torchs_call_where_it_does_not_apply():
    conv = _folded()
    x = torch.randn(2, 8, 9, 7).contiguous(memory_format=CL)
    r = torch.randn(2, 16, 5, 4).contiguous(memory_format=CL)
    with torch.no_grad():
        conv(x.contiguous())  # NCHW
        out = conv(x, r)  # a residual it must not write into
        conv.backend = "reference"
        conv(x)
    assert _primitives(conv) == []
    torch.testing.assert_close(out, conv_bias_act_reference(x, conv.weight, conv.bias, 2, 1, r, True))
    with torch.no_grad():
        conv.backend = None
        kept = r.clone()
        added = conv(x, kept, accumulate=True)
    assert _primitives(conv) == [("onednn", (2, 8, 9, 7), torch.float32, True)]
    assert added.data_ptr() == kept.data_ptr()
    torch.testing.assert_close(added, out)


@pytest.mark.parametrize("dtype", ONEDNN_DTYPES)
def test_optimize_gives_torchs_calls_outputs(dtype, monkeypatch):
    """The engine with the direct path against one on torch's oneDNN call, both judged against float64:
    no more than twice the error of torch's call. (With AVX-512 both oneDNN builds pick the same
    kernels and agree bit for bit; with AVX2 only some shapes get other kernels from them.)"""
    torch.manual_seed(0)
    model = trained_like(HRNet("w18_small_v1", head="pose"))
    x = torch.randn(2, 3, 64, 48).to(dtype).contiguous(memory_format=CL)
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double())
    direct = optimize(model, dtype=dtype)
    with torch.inference_mode():
        outs = [direct(x) for _ in range(3)]  # Python, recording, replayed plan
        assert any(_primitives(m) for m in direct.model.modules() if isinstance(m, FoldedConv))
        monkeypatch.setattr("hrnet_fast.nn.folded.onednn_conv_applies", lambda *args: False)
        plain = optimize(model, dtype=dtype)(x)
        copied = copy.deepcopy(direct)  # the primitives stay behind, made again on first use
        monkeypatch.undo()
        again = copied(x)
    for out in [*outs, again]:
        assert_matches(out, plain, exact, f"{dtype} direct oneDNN engine", twice_reference=True)
    torch.testing.assert_close(again, outs[-1], rtol=0, atol=0)  # the same primitives, remade


def test_turned_off_by_the_environment():
    code = "from hrnet_fast.ops.onednn_conv import onednn_conv_status as s; print(s())"
    env = {**os.environ, DISABLE_ENV: "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"turned off by {DISABLE_ENV}=0"


def test_one_primitive_runs_on_several_threads_at_once():
    """Each call brings its own scratchpad: the engine's worker threads run one conv side by side."""
    x, w, b = _operands((2, 32, 24, 20), 64, 3, torch.float32, False)
    conv = prepare_onednn_conv(w, b, stride=1, padding=1, input_shape=(2, 32, 24, 20), relu=True, residual=False)
    inputs = [torch.randn_like(x) for _ in range(4)]
    expected = [conv_bias_act_reference(t, w, b, 1, 1, None, True) for t in inputs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: [onednn_conv(conv, t) for _ in range(20)], inputs))
    for outs, ref in zip(results, expected, strict=True):
        for out in outs:
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)


def test_bench_environment_says_whether_the_path_is_on(monkeypatch):
    from hrnet_fast.bench.results import environment, onednn_text

    env = environment(torch.device("cpu"), "x")
    assert env["onednn"] and env["onednn_off"] is None
    assert onednn_text(env) == f", oneDNN {env['onednn']} (pip, called directly)"
    monkeypatch.setenv(DISABLE_ENV, "0")
    onednn_conv_status.cache_clear()
    try:
        off = environment(torch.device("cpu"), "x")
    finally:
        onednn_conv_status.cache_clear()
    assert onednn_text(off) == f", oneDNN {env['onednn']} (pip, not called directly: turned off by {DISABLE_ENV}=0)"
    assert onednn_text({"onednn": None}) == ""
