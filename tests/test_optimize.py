"""optimize(): folded, fused inference engine with the model's outputs; compile and export paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrnet_fast import HEADS, HRNet, available_backends, optimize
from hrnet_fast.models.engine import fold_sequential
from hrnet_fast.nn import FoldedConv, fold_conv_bn
from hrnet_fast.ops import conv_act as conv_act_mod
from hrnet_fast.ops import conv_bias_act, conv_bias_act_reference, cpu_features, registry
from hrnet_fast.testing import assert_matches


def trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, as after training (fresh ones are identity)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return model.eval()


def _tuple(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("head", HEADS)
def test_optimized_model_matches_the_reference_in_fp32(head):
    model = trained_like(HRNet("w18_small_v1", head=head))
    engine = optimize(model)
    x = torch.randn(2, 3, 96, 72)
    with torch.no_grad():
        ref = _tuple(model(x))
    out = _tuple(engine(x))
    assert len(out) == len(ref)
    for o, r in zip(out, ref, strict=True):
        assert o.dtype == torch.float32 and o.shape == r.shape
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5 * r.abs().max().item())


def test_outputs_are_ordinary_tensors_even_though_the_forward_runs_in_inference_mode():
    """The engine runs in inference mode (no autograd dispatch per op); what it returns can still be
    changed in place and used with autograd, as a plain forward's output; inside the caller's own
    inference mode it returns inference tensors, with no copy."""
    engine = optimize(trained_like(HRNet("w18_small_v1", head="pose")))
    x = torch.randn(1, 3, 64, 48)
    out = engine(x)
    assert not out.is_inference()
    with torch.inference_mode():
        inner = engine(x)
    assert inner.is_inference()
    torch.testing.assert_close(inner, out)
    expected = 2 * out
    out.mul_(2)  # an inference tensor would refuse an in-place update out here
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_optimized_model_matches_on_every_backend(backend):
    """With folded fusion paths too (triton runs them through its level-2 kernel)."""
    model = trained_like(HRNet("w18_small_v1", head="seg"))
    engine = optimize(model, backend=backend)
    assert engine.model.backend == backend
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(engine(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def _bf16_and_exact(model, x):
    """The model's own bfloat16 output on ``x`` and its float64 one (the model is left in float32)."""
    with torch.no_grad():
        exact = model.double()(x.double())
        own = model.bfloat16()(x.bfloat16())
    model.float()
    return own, exact


def test_bf16_engine_error_is_within_twice_the_reference_implementations_own_bf16_error():
    model = trained_like(HRNet("w18_small_v1", head="seg"))
    x = torch.randn(2, 3, 64, 48)
    own, exact = _bf16_and_exact(model, x)
    engine = optimize(model, dtype=torch.bfloat16)
    out = engine(x)
    assert out.dtype == torch.bfloat16
    assert_matches(out, own, exact, "bf16 engine, mean error", mean=True)


def test_bf16_without_native_support_computes_in_float32_and_returns_bf16(monkeypatch):
    """On a CPU without native bfloat16 (AVX2 only) bf16 convolutions are emulated, several times slower
    than fp32: optimize() says so and computes in fp32 (weights prepacked for oneDNN as in fp32), and
    the bf16 outputs stay within twice the reference's own bf16 error."""
    monkeypatch.setattr(cpu_features, "native_bf16", lambda: False)
    model = trained_like(HRNet("w18_small_v1", head="pose"))
    x = torch.randn(2, 3, 64, 48)
    own, exact = _bf16_and_exact(model, x)
    with pytest.warns(RuntimeWarning, match="no native bfloat16.*computes in float32"):
        engine = optimize(model, dtype=torch.bfloat16)
    assert engine.dtype == torch.bfloat16 and engine.compute_dtype == torch.float32
    outs = [engine(x) for _ in range(2)]
    with torch.inference_mode():
        outs.append(engine(x))  # replayed plan
    assert any(m._packed for m in engine.model.modules() if isinstance(m, FoldedConv))
    for out in outs:
        assert out.dtype == torch.bfloat16
        assert_matches(out, own, exact, "bf16 engine without native bf16, mean error", mean=True)


def test_optimize_copies_and_never_changes_the_original():
    model = trained_like(HRNet("w18_small_v1", head="pose"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = optimize(model, dtype=torch.bfloat16)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(engine.model.conv1, FoldedConv)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in engine.modules())
    assert engine.head == "pose" and engine.arch.name == "w18_small_v1"


def test_train_mode_is_refused_both_ways():
    model = HRNet("w18_small_v1", head="pose")
    with pytest.raises(RuntimeError, match=r"eval mode \(call model.eval\(\) first\)"):
        optimize(model.train())
    model.eval()
    model.stage2[0].fuse_layers.train()
    with pytest.raises(RuntimeError, match="stage2.0.fuse_layers"):
        optimize(model)
    engine = optimize(model.eval())
    with pytest.raises(RuntimeError, match="inference-only"):
        engine.train()
    engine.eval()
    with pytest.raises(TypeError, match="takes an hrnet_fast HRNet"):
        optimize(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="dtype must be one of"):
        optimize(model, dtype=torch.float64)


def test_every_plain_conv_becomes_one_folded_call_and_the_others_stay():
    """A conv no BatchNorm follows (the pose head's last 1x1) runs as a FoldedConv without BN (one
    fused library call, prepared once); a grouped, dilated or reflect-padded conv stays as it is."""
    engine = optimize(trained_like(HRNet("w18_small_v1", head="pose")))
    assert isinstance(engine.model.final_layer, FoldedConv) and not engine.model.final_layer.relu
    assert not any(type(m) is nn.Conv2d for m in engine.model.modules())
    odd = [
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(4, 4, (1, 3), padding=(0, 1)),
        nn.Conv2d(4, 4, 3, padding="same"),
    ]
    folded = fold_sequential(nn.Sequential(*odd, nn.Conv2d(4, 4, 1)))
    assert list(folded)[:-1] == odd and isinstance(folded[-1], FoldedConv)
    x = torch.randn(1, 4, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(folded[-1](x), F.conv2d(x, folded[-1].weight, folded[-1].bias))
    # with a BatchNorm after it, such a conv stays unfolded too (FoldedConv would pad with zeros)
    reflect = nn.Sequential(odd[2], trained_like(nn.Sequential(nn.BatchNorm2d(4)))[0]).eval()
    assert list(fold_sequential(reflect)) == list(reflect)
    with pytest.raises(ValueError, match="zero-padded"):
        FoldedConv(odd[2])


def test_fold_conv_bn_equals_conv_then_eval_batchnorm():
    conv = nn.Conv2d(6, 10, 3, 2, 1, bias=True)
    bn = trained_like(nn.Sequential(nn.BatchNorm2d(10)))[0]
    x = torch.randn(2, 6, 11, 9)
    w, b = fold_conv_bn(conv, bn)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, w, b, 2, 1), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("residual", "relu"), [(False, True), (True, True), (False, False), (True, False)])
def test_fused_conv_epilogue_matches_the_composition(dtype, residual, relu):
    x = torch.randn(2, 8, 13, 11, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 8, 3, 3, dtype=dtype)
    b = torch.randn(16, dtype=dtype)
    r = torch.randn(2, 16, 7, 6, dtype=dtype).contiguous(memory_format=torch.channels_last) if residual else None
    if torch.backends.mkldnn.is_available():
        native = cpu_features.onednn_native(dtype)  # else torch emulates bf16: the reference runs
        assert conv_act_mod._vendor(x, r, relu) is (conv_act_mod._onednn if native else None)
    out = conv_bias_act(x, w, b, stride=2, padding=1, residual=r, relu=relu)
    exact = conv_bias_act_reference(x.double(), w.double(), b.double(), 2, 1, None if r is None else r.double(), relu)
    ref = conv_bias_act_reference(x, w, b, 2, 1, r, relu)
    assert_matches(out, ref, exact, "fused conv epilogue", twice_reference=True)


def test_compiles_with_no_graph_break():
    engine = optimize(trained_like(HRNet("w18_small_v1", head="seg")))
    compiled = torch.compile(engine, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 3, 64, 48)
    torch.testing.assert_close(compiled(x), engine(x), rtol=1e-5, atol=1e-5)


@pytest.fixture
def poisoned_backend(monkeypatch):
    """A fused backend ``poisoned`` whose upsample_sum kernel must never run (it raises)."""

    def kernel(*args):
        raise AssertionError("a fused kernel ran during export")

    dtypes = {"cpu": frozenset({torch.float32})}
    backend = registry.Backend(
        "poisoned",
        "test",
        lambda: None,
        lambda device_type: None,
        lambda: {"upsample_sum": registry.Kernel(kernel, dtypes)},
    )
    monkeypatch.setitem(registry._BACKENDS, "poisoned", backend)
    registry.clear_probes()
    yield
    registry.clear_probes()


def test_export_and_tracing_run_the_reference_ops(poisoned_backend, tmp_path):
    model = trained_like(HRNet("w18_small_v1", head="pose", backend="poisoned"))
    x = torch.randn(1, 3, 64, 48)
    with pytest.raises(AssertionError, match="fused kernel ran"):
        model(x)
    model.backend = "reference"
    with torch.no_grad():
        ref = model(x)
    model.backend = "poisoned"
    traced = torch.jit.trace(model, x, check_trace=False)
    torch.testing.assert_close(traced(x), ref)
    torch.onnx.export(model, (x,), tmp_path / "pose.onnx", dynamo=False)
    assert (tmp_path / "pose.onnx").stat().st_size > 1e6


def test_onnx_export_of_hrnet_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = trained_like(HRNet("w18_small_v1", head="pose"))
    x = torch.randn(1, 3, 64, 48)
    torch.onnx.export(model, (x,), tmp_path / "pose.onnx")
    session = ort.InferenceSession(str(tmp_path / "pose.onnx"))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cuda_graphs_are_cached_per_shape_and_outputs_stay_valid():
    model = trained_like(HRNet("w18_small_v1", head="pose")).cuda()
    engine = optimize(model, dtype=torch.float16)
    a, b = torch.randn(2, 3, 64, 48, device="cuda"), torch.randn(2, 3, 64, 48, device="cuda")
    out_a = engine(a)
    assert engine.graphs.num_graphs == 1
    out_b = engine(b)
    assert engine.graphs.num_graphs == 1
    with torch.no_grad():
        ref_a, ref_b = model.half()(a.half()), model(b.half())
    torch.testing.assert_close(out_a, ref_a, rtol=2e-2, atol=2e-2)  # not overwritten by the later call
    torch.testing.assert_close(out_b, ref_b, rtol=2e-2, atol=2e-2)
    engine(torch.randn(1, 3, 96, 72, device="cuda"))
    assert engine.graphs.num_graphs == 2
    engine.float()
    assert engine.graphs.num_graphs == 0


def test_a_refusing_library_call_warns_once_and_falls_back(monkeypatch):
    calls = []

    def _refusing(*args):
        calls.append(1)
        raise RuntimeError("no kernel for these operands")

    monkeypatch.setattr(conv_act_mod, "_vendor", lambda x, r, relu: _refusing)
    monkeypatch.setattr(conv_act_mod, "_REFUSED", set())
    x, w, b = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3), torch.randn(6)
    with pytest.warns(RuntimeWarning, match="refused torch.float32 .*no kernel for these operands"):
        out = conv_bias_act(x, w, b, padding=1)
    torch.testing.assert_close(out, conv_bias_act_reference(x, w, b, 1, 1, None, True))
    conv_bias_act(x, w, b, padding=1)  # not asked again
    assert calls == [1]
