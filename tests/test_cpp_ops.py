"""The C++ extension's ops (backend ``cpp``) against the reference: its CPU and CUDA kernels, and the
CUDA kernels emulated on the host (``test_cpp_emulated_cuda.cpp``: the same kernel code run thread by thread, so
the CUDA indexing and tails are checked without a GPU).

Outputs are poisoned (torch's deterministic mode fills every fresh tensor with NaN), so an element a
kernel forgets to write fails. Results are judged by :func:`hrnet_fast.testing.assert_matches`:
fp32/fp64 to rounding; fp16/bf16 at most twice as far from float64 as the reference's own error.
"""

from __future__ import annotations

import pytest
import torch
from emulated_cuda import emulated_library

import hrnet_fast
from hrnet_fast.ops import registry, upsample_concat, upsample_sum
from hrnet_fast.ops import upsample_concat_op as concat_mod
from hrnet_fast.ops import upsample_sum_op as sum_mod
from hrnet_fast.testing import assert_matches

pytestmark = pytest.mark.usefixtures("poisoned_outputs")


@pytest.fixture(scope="session")
def emulated_ops():
    """The emulated CUDA kernels as the CPU kernels of the ops hrnet_fast_emulated_cuda::<op>_cpp."""
    return emulated_library()


GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DTYPES_OF = {"cpu": (torch.float64, *GPU_DTYPES), "cuda": GPU_DTYPES, "emulated-cuda": GPU_DTYPES}
# The cpp backend's kernels on each device, and the emulated CUDA kernels.
TARGETS = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda), pytest.param("emulated-cuda")]
# Every target with every dtype its kernels take.
TARGET_DTYPES = [
    pytest.param(t.values[0], dtype, marks=t.marks, id=f"{t.values[0]}-{str(dtype).removeprefix('torch.')}")
    for t in TARGETS
    for dtype in DTYPES_OF[t.values[0]]
]


class Target:
    """Where a test runs: an op namespace, a device and the dtypes its kernels take."""

    def __init__(self, name, ops, device):
        self.name, self.ops, self.device, self.dtypes = name, ops, torch.device(device), DTYPES_OF[name]

    def randn(self, shape, dtype, fmt=torch.contiguous_format, grad=False):
        t = torch.randn(shape, dtype=dtype, device=self.device).contiguous(memory_format=fmt)
        return t.requires_grad_(grad)


@pytest.fixture(params=TARGETS)
def target(request):
    if request.param == "emulated-cuda":
        return Target(request.param, request.getfixturevalue("emulated_ops"), "cpu")
    assert hrnet_fast.backend_status()["cpp"] is None
    return Target(request.param, registry.OpLibrary("hrnet_fast", "cpp"), request.param)


def test_poisoning_is_on():
    assert torch.empty(64).isnan().all()


def _f64(ts):
    return [t.detach().double() for t in ts]


# mode, align_corners, relu, base shape, low sizes (up, down and same size), number of same addends
SUM_CASES = [
    ("nearest", False, True, (2, 8, 13, 12), [(7, 6), (3, 2), (20, 17)], 1),
    ("bilinear", False, True, (1, 5, 9, 7), [(5, 4), (1, 1)], 2),
    ("bilinear", True, False, (3, 16, 8, 6), [(4, 3), (8, 6), (11, 9)], 0),
]
FORMATS = [torch.contiguous_format, torch.channels_last]


def _sum_inputs(target, case, dtype, fmt, grad=False):
    _, _, _, shape, low_hw, num_same = case
    n, c = shape[:2]
    base = target.randn(shape, dtype, fmt, grad)
    same = [target.randn(shape, dtype, fmt, grad) for _ in range(num_same)]
    low = [target.randn((n, c, *hw), dtype, fmt, grad) for hw in low_hw]
    return base, same, low


@pytest.mark.parametrize(("target", "dtype"), TARGET_DTYPES, indirect=["target"])
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", SUM_CASES, ids=["nearest", "bilinear", "bilinear-ac"])
def test_upsample_sum_forward_and_backward_match_the_reference(target, case, fmt, dtype):
    mode, ac, relu = case[:3]
    base, same, low = _sum_inputs(target, case, dtype, fmt)
    out = target.ops.upsample_sum(base, same, low, mode, ac, relu)
    ref = sum_mod.upsample_sum_reference(base, same, low, mode, ac, relu)
    exact = sum_mod.upsample_sum_reference(*_f64([base]), _f64(same), _f64(low), mode, ac, relu)
    assert_matches(out, ref, exact)
    assert out.is_contiguous(memory_format=fmt)

    grad = target.randn(out.shape, dtype, fmt)
    low_hw = [s for t in low for s in t.shape[-2:]]
    g, g_low = target.ops.upsample_sum_backward(grad, out, low_hw, mode, ac, relu)
    ref_g, ref_low = sum_mod.upsample_sum_backward_reference(grad, out, low_hw, mode, ac, relu)
    exact_g, exact_low = sum_mod.upsample_sum_backward_reference(grad.double(), out.double(), low_hw, mode, ac, relu)
    for got, r, e in zip([g, *g_low], [ref_g, *ref_low], [exact_g, *exact_low], strict=True):
        assert_matches(got, r, e)
        assert got.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", SUM_CASES, ids=["nearest", "bilinear", "bilinear-ac"])
def test_upsample_sum_gradients_equal_autograd_through_the_reference(target, case, fmt):
    dtype = torch.float64 if torch.float64 in target.dtypes else torch.float32
    mode, ac, relu = case[:3]
    base, same, low = _sum_inputs(target, case, dtype, fmt, grad=True)
    out = target.ops.upsample_sum(base, same, low, mode, ac, relu)
    ref = sum_mod.upsample_sum_reference(base, same, low, mode, ac, relu)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [base, *same, *low], g)
    want = torch.autograd.grad(ref, [base, *same, *low], g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


CONCAT_SHAPES = [(2, 8, 11, 9), (2, 16, 6, 5), (2, 8, 3, 3), (2, 8, 17, 13)]  # 16-byte vectors fit
ODD_CONCAT_SHAPES = [*CONCAT_SHAPES[:3], (2, 3, 17, 13)]  # 35 channels: value by value


@pytest.mark.parametrize(("target", "dtype"), TARGET_DTYPES, indirect=["target"])
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("mode", "ac"), [("nearest", False), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("shapes", [CONCAT_SHAPES, ODD_CONCAT_SHAPES], ids=["40-channels", "35-channels"])
def test_upsample_concat_forward_and_backward_match_the_reference(target, shapes, mode, ac, fmt, dtype):
    xs = [target.randn(s, dtype, fmt) for s in shapes]
    out = target.ops.upsample_concat(xs, mode, ac)
    assert_matches(
        out,
        concat_mod.upsample_concat_reference(xs, mode, ac),
        concat_mod.upsample_concat_reference(_f64(xs), mode, ac),
    )
    assert out.is_contiguous(memory_format=fmt)
    grad = target.randn(out.shape, dtype, fmt)
    channels, hw = [x.shape[1] for x in xs], [s for x in xs for s in x.shape[-2:]]
    grads = target.ops.upsample_concat_backward(grad, channels, hw, mode, ac)
    refs = concat_mod.upsample_concat_backward_reference(grad, channels, hw, mode, ac)
    exact = concat_mod.upsample_concat_backward_reference(grad.double(), channels, hw, mode, ac)
    for got, r, e in zip(grads, refs, exact, strict=True):
        assert_matches(got, r, e)


def test_inputs_of_any_strides_and_a_broadcast_gradient(target):
    dtype = torch.float32
    base = target.randn((2, 16, 9, 8), dtype)[:, ::2]  # not dense
    low = [target.randn((2, 8, 5, 5), dtype).transpose(2, 3), target.randn((2, 8, 4, 4), dtype)[..., :3]]
    out = target.ops.upsample_sum(base, [], low, "bilinear", False, True)
    torch.testing.assert_close(out, sum_mod.upsample_sum_reference(base, [], low, "bilinear", False, True))
    grad = torch.ones((), device=target.device).expand(out.shape)  # what out.sum().backward() sends
    g, g_low = target.ops.upsample_sum_backward(grad, out, [5, 5, 4, 3], "bilinear", False, True)
    ref_g, ref_low = sum_mod.upsample_sum_backward_reference(grad, out, [5, 5, 4, 3], "bilinear", False, True)
    for a, b in zip([g, *g_low], [ref_g, *ref_low], strict=True):
        torch.testing.assert_close(a, b)


def test_identity_sum_returns_a_fresh_tensor(target):
    base = target.randn((1, 4, 5, 3), torch.float32)
    out = target.ops.upsample_sum(base, [], [], "nearest", False, False)
    assert out.data_ptr() != base.data_ptr()
    torch.testing.assert_close(out, base, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
def test_opcheck(target, fmt):
    dtype = torch.float64 if torch.float64 in target.dtypes else torch.float32
    base, same, low = _sum_inputs(target, SUM_CASES[1], dtype, fmt, grad=True)
    torch.library.opcheck(target.ops.upsample_sum.default, (base, same, low, "bilinear", False, True))
    xs = [target.randn(s, dtype, fmt, grad=True) for s in CONCAT_SHAPES[:3]]
    torch.library.opcheck(target.ops.upsample_concat.default, (xs, "bilinear", True))


def test_batches_larger_than_one_launch_are_split(emulated_ops):
    """The emulation takes at most 4096 elements per launch: 5 samples of 1248 need two launches."""
    target = Target("emulated-cuda", emulated_ops, "cpu")
    base, low = target.randn((5, 8, 13, 12), torch.float32), [target.randn((5, 8, 7, 6), torch.float32)]
    out = emulated_ops.upsample_sum(base, [], low, "nearest", False, True)
    torch.testing.assert_close(out, sum_mod.upsample_sum_reference(base, [], low, "nearest", False, True))
    g, (g_low,) = emulated_ops.upsample_sum_backward(torch.ones_like(out), out, [7, 6], "nearest", False, True)
    ref_g, (ref_low,) = sum_mod.upsample_sum_backward_reference(
        torch.ones_like(out), out, [7, 6], "nearest", False, True
    )
    torch.testing.assert_close(g, ref_g)
    torch.testing.assert_close(g_low, ref_low)
    with pytest.raises(RuntimeError, match=r"one sample has 2\^31 elements or more"):
        emulated_ops.upsample_sum(target.randn((1, 4, 40, 40), torch.float32), [], [], "nearest", False, True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_the_public_ops_compile_with_no_graph_break_and_keep_the_fused_op(device):
    from torch._dynamo.testing import EagerAndRecordGraphs

    def f(base, low, xs):
        return (
            upsample_sum(base, [], low, mode="nearest", backend="cpp").sum()
            + upsample_concat(xs, mode="bilinear", backend="cpp").sum()
        )

    base = torch.randn(2, 4, 9, 8, device=device, requires_grad=True)
    low = [torch.randn(2, 4, 5, 4, device=device, requires_grad=True)]
    xs = [torch.randn(2, 4, 9, 8, device=device), torch.randn(2, 3, 4, 4, device=device, requires_grad=True)]
    recorder = EagerAndRecordGraphs()
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend=recorder)
    torch.testing.assert_close(compiled(base, low, xs), f(base, low, xs))
    compiled(base, low, xs).backward()
    assert base.grad is not None and low[0].grad is not None and xs[1].grad is not None
    called = {node.target for g in recorder.graphs for node in g.graph.nodes if node.op == "call_function"}
    assert torch.ops.hrnet_fast.upsample_sum_cpp in called  # dynamo keeps the op packet
    assert torch.ops.hrnet_fast.upsample_concat_cpp in called


@pytest.mark.cuda
def test_the_cuda_kernels_name_an_input_on_another_device():
    """A first input on the CPU and another on the GPU reach the CUDA kernels (dispatch follows the GPU
    tensor), whose checks name the input on the other device (the device guard skips a CPU input)."""
    assert hrnet_fast.backend_status()["cpp"] is None  # loads the library, which defines the ops
    ops, cpu = registry.OpLibrary("hrnet_fast", "cpp"), torch.randn(1, 4, 6, 6)
    with pytest.raises(RuntimeError, match=r"low\[0\] is on cuda:0 but the first input is on cpu"):
        ops.upsample_sum(cpu, [], [torch.randn(1, 4, 3, 3, device="cuda")], "nearest", False, True)
    with pytest.raises(RuntimeError, match=r"xs\[1\] is on cuda:0 but the first input is on cpu"):
        ops.upsample_concat([cpu, cpu.cuda()], "nearest", False)
    with pytest.raises(RuntimeError, match="out is on cuda:0 but the first input is on cpu"):
        ops.upsample_sum_backward(cpu, cpu.cuda(), [3, 3], "nearest", False, True)


def test_bad_inputs_raise_clear_errors(target):
    ops, f32 = target.ops, torch.float32
    base = target.randn((1, 4, 6, 6), f32)
    with pytest.raises(RuntimeError, match=r"low\[0\] has 3 channels, base has 4"):
        ops.upsample_sum(base, [], [target.randn((1, 3, 3, 3), f32)], "nearest", False, True)
    with pytest.raises(RuntimeError, match=r"same\[0\] has shape \[1, 4, 6, 5\]"):
        ops.upsample_sum(base, [target.randn((1, 4, 6, 5), f32)], [], "nearest", False, True)
    with pytest.raises(RuntimeError, match="upsampling mode must be 'nearest' or 'bilinear', got 'area'"):
        ops.upsample_sum(base, [], [], "area", False, True)
    with pytest.raises(RuntimeError, match="align_corners=True only applies"):
        ops.upsample_sum(base, [], [], "nearest", True, True)
    with pytest.raises(RuntimeError, match=r"low\[0\] is Half but the first input is Float"):
        ops.upsample_sum(base, [], [target.randn((1, 4, 3, 3), torch.float16)], "nearest", False, True)
    with pytest.raises(RuntimeError, match="takes float32, float16, bfloat16"):
        ops.upsample_sum(base.long(), [], [], "nearest", False, True)
    with pytest.raises(RuntimeError, match="must be 4-D"):
        ops.upsample_concat([base[0]], "nearest", False)
    with pytest.raises(RuntimeError, match="channels sum to 5"):
        ops.upsample_concat_backward(base, [2, 3], [6, 6, 3, 3], "nearest", False)
    if torch.float64 not in target.dtypes:
        with pytest.raises(RuntimeError, match="takes float32, float16, bfloat16 tensors, got Double"):
            ops.upsample_sum(base.double(), [], [], "nearest", False, True)
