"""optimize() on a CPU: prepacked oneDNN weights, convolutions that add into the shortcut, and the
worker threads that run the chunks of a batch side by side."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
import time

import pytest
import torch
from cpu_dtypes import ONEDNN_DTYPES
from test_optimize import trained_like
from torch import nn

from hrnet_fast import HRNet, optimize
from hrnet_fast.nn import FoldedConv
from hrnet_fast.nn.cpu_workers import CpuWorkers, _omp_setter, cpu_workers
from hrnet_fast.ops import conv_bias_act, conv_bias_act_reference
from hrnet_fast.testing import assert_matches

ONEDNN = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")


@pytest.fixture
def two_threads():
    """At least two intra-op threads, so the engine uses its worker threads (as on any multi-core CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    if cpu_workers() is None:
        pytest.skip("torch's intra-op threads are not OpenMP's here")
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pose():
    return trained_like(HRNet("w18_small_v1", head="pose"))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_worker_engine_matches_the_reference_and_the_single_threaded_engine(two_threads, pose, batch, channels_last):
    x = torch.randn(batch, 3, 64, 48)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = pose(x)
    out = optimize(pose, cpu_workers=True)(x)
    plain = optimize(pose)(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    torch.testing.assert_close(out, plain, rtol=1e-6, atol=1e-6 * ref.abs().max().item())


FIRST_CALL_ON_WORKERS = """
import torch
from hrnet_fast import HRNet, optimize
torch.set_num_threads(2)
torch.manual_seed(0)
model = HRNet("w18_small_v1", head="pose").eval()
x = torch.randn(4, 3, 64, 48)
with torch.no_grad():
    out = optimize(model, cpu_workers=True)(x)  # the backends are probed first here, on the workers
    ref = HRNet("w18_small_v1", head="pose", backend="reference").eval()
    ref.load_state_dict(model.state_dict())
    print(float((out - ref(x)).abs().max() / ref(x).abs().max()))
"""


def test_a_fresh_processs_first_call_may_probe_the_backends_on_the_worker_threads():
    """Regression: two workers probing at once defined the cpp ops twice, one saw the backend fail
    and fell back to ``reference``, whose kernel table had never been filled (KeyError)."""
    run = subprocess.run(
        [sys.executable, "-c", FIRST_CALL_ON_WORKERS], capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert float(run.stdout.split()[-1]) < 1e-5


@pytest.mark.parametrize(("head", "batch"), [("pose", 1), ("features", 3)])
def test_bf16_worker_engine_is_within_twice_the_references_own_error(two_threads, head, batch):
    model = trained_like(HRNet("w18_small_v1", head=head))
    x = torch.randn(batch, 3, 64, 48).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        exact = model.double()(x.double())
        own = model.bfloat16()(x.bfloat16())
    model.float()
    out = optimize(model, dtype=torch.bfloat16, cpu_workers=True)(x)
    for o, r, e in zip(*(t if isinstance(t, tuple) else (t,) for t in (out, own, exact)), strict=True):
        assert_matches(o, r, e, f"bf16 {head} b{batch}", mean=True)


def _workers() -> CpuWorkers:
    setter = _omp_setter()
    if setter is None:
        pytest.skip("torch's intra-op threads are not OpenMP's here")
    return CpuWorkers(2, setter)


def test_workers_run_calls_side_by_side_in_order_and_hand_back_errors():
    workers = _workers()
    started = []

    def task(i):
        started.append(threading.current_thread().name)
        time.sleep(0.05)
        return i * i

    t0 = time.perf_counter()
    assert workers.map([lambda i=i: task(i) for i in range(4)]) == [0, 1, 4, 9]
    assert time.perf_counter() - t0 < 0.18  # two threads: about 0.1 s, not 0.2 s
    assert len(set(started)) == 2 and all(name.startswith("hrnet_fast-cpu") for name in started)
    with pytest.raises(ZeroDivisionError):
        workers.map([lambda: 1, lambda: 1 / 0])


def test_workers_keep_one_intra_op_thread_each_and_carry_grad_mode():
    workers = _workers()
    main_threads = torch.get_num_threads()
    assert workers.map([torch.get_num_threads] * 4) == [1] * 4
    assert torch.get_num_threads() == main_threads
    with torch.no_grad():
        assert workers.map([torch.is_grad_enabled]) == [False]
    with torch.inference_mode():
        assert workers.map([torch.is_inference_mode_enabled]) == [True]
    assert workers.map([cpu_workers]) == [None]  # an engine called on a worker runs in place


@ONEDNN
def test_prepacked_weights_follow_in_place_weight_updates():
    # stride 2: a conv that oneDNN runs (3x3 stride-1 fp32 convs run winograd_conv on cpp)
    conv = FoldedConv(nn.Conv2d(8, 16, 3, 2, 1), trained_like(nn.Sequential(nn.BatchNorm2d(16)))[0], relu=True)
    x = torch.randn(2, 8, 9, 7).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        first = conv(x)
        assert len(conv._packed) == 1 and conv.packed_weight(x).is_mkldnn
        conv.weight.mul_(-1.5)
        again = conv(x)
    ref = conv_bias_act_reference(x, conv.weight, conv.bias, 2, 1, None, True)
    torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, again)
    with torch.no_grad():
        conv(torch.randn(1, 8, 5, 5))
    assert len(conv._packed) == 2  # one packed copy per input shape of the current weight


@ONEDNN
@pytest.mark.parametrize("dtype", ONEDNN_DTYPES)
def test_accumulating_convolution_adds_into_the_residual(dtype):
    x = torch.randn(2, 8, 13, 11, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(16, 8, 3, 3, dtype=dtype), torch.randn(16, dtype=dtype)
    r = torch.randn(2, 16, 13, 11, dtype=dtype).contiguous(memory_format=torch.channels_last)
    exact = conv_bias_act_reference(x.double(), w.double(), b.double(), 1, 1, r.double(), True)
    ref = conv_bias_act_reference(x, w, b, 1, 1, r, True)
    residual = r.clone()
    out = conv_bias_act(x, w, b, padding=1, residual=residual, accumulate=True)
    assert out.data_ptr() == residual.data_ptr()  # no new output buffer
    assert_matches(out, ref, exact, f"{dtype} accumulate", tol=1e-5)


def test_optimized_engine_exports_to_onnx_through_the_reference_ops(two_threads, pose, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    engine = optimize(pose)
    x = torch.randn(1, 3, 64, 48)
    torch.onnx.export(engine, (x,), tmp_path / "engine.onnx", dynamo=False, input_names=["images"])
    session = ort.InferenceSession(str(tmp_path / "engine.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), engine(x), rtol=1e-4, atol=1e-4)


def test_a_used_engine_can_be_copied_and_saved_and_gives_the_same_outputs(pose, tmp_path):
    engine = optimize(pose)
    x = torch.randn(2, 3, 64, 48)
    for _ in range(3):  # prepacked weights made, op plan recorded and replayed
        out = engine(x)
    engine.graphs._graphs["stand-in"] = threading.Lock()  # as uncopyable as a captured CUDA graph
    torch.save(engine, tmp_path / "engine.pt")
    loaded = torch.load(tmp_path / "engine.pt", weights_only=False)
    for twin in (copy.deepcopy(engine), loaded):
        assert twin.plans.num_plans == 0 and twin.graphs.num_graphs == 0  # made again on first use
        for _ in range(3):
            assert torch.equal(twin(x), out)
        assert twin.plans.num_plans == 1
        assert twin.plans.fn is twin.model
