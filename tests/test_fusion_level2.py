"""MultiResolutionFusion and HRNet on every backend with a fused ``fusion_branch`` kernel (triton, cpp):
level 2 in inference (BN folded, against the eval-mode reference with BN), level 1 in training,
fresh folded weights, torch.compile."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from triton_helpers import (
    TRITON_UNAVAILABLE,
    exact_fp32,  # noqa: F401  (an autouse fixture)
)

from hrnet_fast import HRNet
from hrnet_fast.kernels import interpreted
from hrnet_fast.layout import memory_format_of
from hrnet_fast.nn import MultiResolutionFusion, folded_fusion
from hrnet_fast.ops.registry import unsupported_reason
from hrnet_fast.testing import assert_matches

CHANNELS = (16, 24, 40, 64)
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]
FLAVOURS = [  # (dtype, channels_last), pairwise over the modes
    (torch.float32, False),
    (torch.float16, True),
    (torch.bfloat16, False),
    (torch.float32, True),
]


def _randomize_bn(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_()
                m.bias.normal_()
    return module


# (backend, device): each fused backend on the CPU (triton under the interpreter) and on CUDA
BACKENDS = [
    pytest.param(
        "triton",
        "cpu",
        marks=pytest.mark.skipif(
            TRITON_UNAVAILABLE is not None or not interpreted(), reason="Triton runs on the CPU only when interpreted"
        ),
        id="triton-cpu",
    ),
    pytest.param("triton", "cuda", marks=pytest.mark.cuda, id="triton-cuda"),
    pytest.param("cpp", "cpu", id="cpp-cpu"),
    pytest.param("cpp", "cuda", marks=pytest.mark.cuda, id="cpp-cuda"),
]


def _fusion(backend, device, mode="nearest", ac=False, num_outputs=None) -> MultiResolutionFusion:
    fuse = MultiResolutionFusion(CHANNELS, num_outputs, upsample=mode, align_corners=ac, backend=backend)
    return _randomize_bn(fuse).to(device).eval()


def _branches(device, dtype=torch.float32, channels_last=False, n=2, h=17, w=13):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = []
    for c in CHANNELS:
        xs.append(torch.randn(n, c, h, w, device=device).to(dtype).contiguous(memory_format=fmt))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return xs


def _reference(fuse, dtype):
    ref = copy.deepcopy(fuse).to(dtype)
    ref.backend = "reference"
    return ref


@pytest.fixture
def level2_calls(monkeypatch):
    """The backends of the fused fusion_branch calls the module makes for its output branches (not
    those running the earlier steps of a downsample chain, _chain_step, which level2_calls.steps
    counts)."""
    calls = Level2Calls()
    real_branch, real_step = folded_fusion.fusion_branch, folded_fusion._chain_step

    def counting(*args, **kwargs):
        if not calls.in_step:
            calls.append(kwargs["backend"])
        return real_branch(*args, **kwargs)

    def step(*args, **kwargs):
        calls.in_step, calls.steps = True, calls.steps + 1
        try:
            return real_step(*args, **kwargs)
        finally:
            calls.in_step = False

    monkeypatch.setattr(folded_fusion, "fusion_branch", counting)
    monkeypatch.setattr(folded_fusion, "_chain_step", step)
    return calls


class Level2Calls(list):
    """The branch calls' backends (the list), the chain-step calls made (``steps``), and whether one
    is running (``in_step``: the fusion_branch call inside it is not a branch's)."""

    in_step = False
    steps = 0


def _kernel_chain_steps(backend, device) -> int:
    """Chain steps a four-branch forward runs on the fusion_branch kernel: all four (0 -> 2: one,
    0 -> 3: two, 1 -> 3: one) on the CPU on cpp, none elsewhere (torch's conv)."""
    return 4 if (backend, device) == ("cpp", "cpu") else 0


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize(("dtype", "channels_last"), FLAVOURS, ids=["f32", "f16-cl", "bf16", "f32-cl"])
@pytest.mark.parametrize(("mode", "ac"), MODES)
def test_inference_runs_level2_and_matches_the_eval_reference_with_bn(
    mode, ac, dtype, channels_last, backend, device, level2_calls
):
    fuse = _fusion(backend, device, mode, ac).to(dtype)
    xs = _branches(device, dtype, channels_last)
    with torch.no_grad():
        outs = fuse(xs)
        refs = _reference(fuse, dtype)(xs)
        refs64 = _reference(fuse, torch.float64)([x.double() for x in xs])
    assert level2_calls == [backend] * 4
    assert level2_calls.steps == _kernel_chain_steps(backend, device)
    for i, (out, ref, ref64) in enumerate(zip(outs, refs, refs64, strict=True)):
        assert out.stride() == xs[i].stride()
        assert_matches(out, ref, ref64, f"branch {i}", tol=1e-5)


@pytest.mark.parametrize(("backend", "device"), [p for p in BACKENDS if p.id in ("cpp-cpu", "triton-cpu")])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "f16", "f32"])
@pytest.mark.parametrize("layouts", ["nchw", "mixed"])
def test_cpu_runs_16_bit_steps_channels_last_and_returns_each_base_layout(layouts, dtype, backend, device, monkeypatch):
    seen = []
    real = folded_fusion.fusion_branch

    def recording(base, down, down_weight, low, *args, **kwargs):
        seen.append([(any(t is x for x in xs), memory_format_of(t)) for t in (base, *down, *low)])
        return real(base, down, down_weight, low, *args, **kwargs)

    monkeypatch.setattr(folded_fusion, "fusion_branch", recording)
    fuse = _fusion(backend, device).to(dtype)
    xs = _branches(device, dtype)
    if layouts == "mixed":
        xs[1] = xs[1].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        outs = fuse(xs)
        refs = _reference(fuse, dtype)(xs)
        refs64 = _reference(fuse, torch.float64)([x.double() for x in xs])
    chain_steps = _kernel_chain_steps(backend, device)
    assert len(seen) == 4 + chain_steps  # the chain steps' maps too
    maps = [m for call in seen for m in call]  # (one of xs itself, layout)
    if dtype == torch.float32:  # maps run as they come; the kernel's chain steps return channels_last
        # the bases, the low maps and the direct down maps; on the kernel, the first chain steps' inputs
        assert sum(given for given, _ in maps) == 4 + 6 + 3 + (3 if chain_steps else 0)
        if chain_steps:
            assert all(fmt == torch.channels_last for given, fmt in maps if not given)
    else:
        assert {fmt for _, fmt in maps} == {torch.channels_last}
    for i, (out, ref, ref64, x) in enumerate(zip(outs, refs, refs64, xs, strict=True)):
        assert out.stride() == x.stride()
        assert_matches(out, ref, ref64, f"branch {i}", tol=1e-5)


@pytest.mark.parametrize(("backend", "device"), [p for p in BACKENDS if p.id == "cpp-cpu"])
def test_cpu_chain_steps_share_a_few_zero_bases_that_stay_zero(backend, device, level2_calls, monkeypatch):
    monkeypatch.setattr(folded_fusion, "_ZEROS", {})
    fuse, other = _fusion(backend, device), _fusion(backend, device)
    with torch.inference_mode():
        _matches_reference(fuse, _branches(device))  # the zero bases are made here...
    made = dict(folded_fusion._ZEROS)
    with torch.no_grad():
        _matches_reference(other, _branches(device))  # ... read by another module, outside inference mode
        assert len(made) == 3  # (16 ch, 9x7), (16 ch, 5x4), (24 ch, 5x4)
        assert folded_fusion._ZEROS.keys() == made.keys()
        assert all(folded_fusion._ZEROS[key] is zeros for key, zeros in made.items())
        for h in range(5, 5 + folded_fusion.MAX_ZERO_MAPS):  # three more zero bases each
            _matches_reference(fuse, _branches(device, h=h, w=h + 2))
    zeros = folded_fusion._ZEROS.values()
    assert 0 < len(zeros) <= folded_fusion.MAX_ZERO_MAPS
    assert all(not z.any() and not z.is_inference() for z in zeros)
    assert level2_calls.steps == 4 * (2 + folded_fusion.MAX_ZERO_MAPS)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_single_output_module_and_inference_mode(backend, device, level2_calls):
    fuse = _fusion(backend, device, num_outputs=1)
    xs = _branches(device, n=1, h=9, w=15)
    with torch.inference_mode():
        (out,) = fuse(xs)
        (ref,) = _reference(fuse, torch.float32)(xs)
    assert level2_calls == [backend]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_folded_weights_follow_load_state_dict_in_place_updates_and_dtype(backend, device):
    fuse = _fusion(backend, device)
    xs = _branches(device)
    with torch.no_grad():
        fuse(xs)  # folds and caches
        fuse.load_state_dict(_randomize_bn(copy.deepcopy(fuse)).state_dict())
        torch.testing.assert_close(fuse(xs), _reference(fuse, torch.float32)(xs), rtol=1e-5, atol=1e-5)
        fuse[2][0][1][0].weight.mul_(3)  # second step of the 0 -> 2 chain, in place
        torch.testing.assert_close(fuse(xs), _reference(fuse, torch.float32)(xs), rtol=1e-5, atol=1e-5)
        fuse[0][1][1].running_var.data.mul_(4)  # through .data: no version bump, so clear by hand
        folded_fusion.clear_folded(fuse)
        torch.testing.assert_close(fuse(xs), _reference(fuse, torch.float32)(xs), rtol=1e-5, atol=1e-5)
        fuse.to(torch.float16)
        half = [x.half() for x in xs]
        refs64 = _reference(fuse, torch.float64)([x.double() for x in xs])
        for out, ref, ref64 in zip(fuse(half), _reference(fuse, torch.float16)(half), refs64, strict=True):
            assert_matches(out, ref, ref64, "after .to(float16)")


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_training_runs_level1_with_gradients_matching_the_reference(backend, device, level2_calls):
    fuse = _fusion(backend, device, "bilinear").train()
    ref = _reference(fuse, torch.float32)
    xs = [x.requires_grad_() for x in _branches(device, channels_last=True)]
    outs, refs = fuse(xs), ref(xs)
    assert level2_calls == []
    for out, r in zip(outs, refs, strict=True):
        torch.testing.assert_close(out, r, rtol=1e-5, atol=1e-5)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), device=device).view_as(o)).sum() for o in outs)
    loss_ref = sum((o * torch.linspace(-1, 1, o.numel(), device=device).view_as(o)).sum() for o in refs)
    params, params_ref = list(fuse.parameters()), list(ref.parameters())
    got = torch.autograd.grad(loss, [*xs, *params])
    want = torch.autograd.grad(loss_ref, [*xs, *params_ref])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_level1_when_level2_does_not_apply_says_why(backend, device, caplog, level2_calls):
    fuse = _fusion(backend, device)
    xs = _branches(device)
    fp64_reason = unsupported_reason("fusion_branch", backend, xs[0].double())  # None: cpp on the CPU
    with caplog.at_level("DEBUG", logger="hrnet_fast.nn.folded_fusion"):
        fuse(xs)  # eval, but parameters need gradients
        with torch.no_grad():
            fuse.double()([x.double() for x in xs])
    assert level2_calls == ([] if fp64_reason else [backend] * 4)
    assert "gradients are needed" in caplog.text
    assert fp64_reason is None or fp64_reason in caplog.text


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize("training", [False, True], ids=["eval-level2", "train-level1"])
def test_compiles_with_no_graph_break(training, backend, device):
    fuse = _fusion(backend, device, "bilinear").train(training)
    xs = _branches(device, n=1, h=9, w=7)
    compiled = torch.compile(fuse, fullgraph=True, backend="aot_eager")
    with torch.set_grad_enabled(training):
        got, want = compiled(xs), _reference(fuse, torch.float32)(xs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if training:
        sum(o.sum() for o in got).backward()
        assert all(p.grad is not None for p in fuse.parameters())


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_hrnet_w32_pose_matches_the_reference_model(backend, device):
    torch.manual_seed(0)
    model = _randomize_bn(HRNet("w32", head="pose")).to(device).eval()
    ref = copy.deepcopy(model)
    model.backend, ref.backend = backend, "reference"
    x = torch.randn(1, 3, 64, 48, device=device)
    with torch.no_grad():
        out, want = model(x), ref(x)
    assert out.shape == (1, 17, 16, 12)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def _matches_reference(fuse, xs, dtype=torch.float32):
    outs, refs = fuse(xs), _reference(fuse, dtype)(xs)
    for out, ref in zip(outs, refs, strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    return outs


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_folded_weights_follow_replaced_submodules_parameters_and_storage(backend, device, level2_calls):
    fuse = _fusion(backend, device)
    xs = _branches(device)
    with torch.no_grad():
        before = _matches_reference(fuse, xs)  # folds and caches
        fuse[3][1] = _randomize_bn(copy.deepcopy(fuse[3][1]))  # a replaced submodule (chain 1 -> 3)
        after = _matches_reference(fuse, xs)
        assert not torch.allclose(after[3], before[3]) and torch.equal(after[0], before[0])
        conv = fuse[0][2][0]
        conv.weight = nn.Parameter(torch.randn_like(conv.weight))  # a replaced parameter
        _matches_reference(fuse, xs)
        fuse[1][0][0][1].running_mean.data = torch.randn_like(fuse[1][0][0][1].running_mean)  # new storage
        _matches_reference(fuse, xs)
        fuse.load_state_dict(_randomize_bn(copy.deepcopy(fuse)).state_dict(), assign=True)  # new tensors
        _matches_reference(fuse, xs)
    assert level2_calls == [backend] * 4 * 5


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_an_unchanged_module_folds_once_per_dtype(backend, device, monkeypatch):
    folds = []
    real = folded_fusion._fold_branches
    monkeypatch.setattr(folded_fusion, "_fold_branches", lambda *args: folds.append(args[1]) or real(*args))
    fuse = _fusion(backend, device)
    xs = _branches(device)
    with torch.no_grad():
        for _ in range(3):
            fuse(xs)
        assert folds == [torch.float32]
        fuse(xs)
        fuse[0][3][1].bias.add_(1)  # in place: the version counter moves
        _matches_reference(fuse, xs)
        assert folds == [torch.float32] * 2
        half = fuse.half()
        half([x.half() for x in xs])
        half([x.half() for x in xs])
        assert folds == [torch.float32] * 2 + [torch.float16]


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_a_batchnorm_that_stops_folding_sends_the_module_back_to_level1(backend, device, caplog, level2_calls):
    fuse = _fusion(backend, device)
    xs = _branches(device)
    with torch.no_grad():
        fuse(xs)
        assert level2_calls == [backend] * 4
        bn = fuse[2][3][1]
        bn.running_mean, bn.running_var = None, None  # batch statistics from now on, even in eval mode
        with caplog.at_level("DEBUG", logger="hrnet_fast.nn.folded_fusion"):
            _matches_reference(fuse, xs)
    assert level2_calls == [backend] * 4
    assert "cannot be folded" in caplog.text


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_inference_tensor_parameters_refold_on_every_call(backend, device, level2_calls):
    with torch.inference_mode():
        fuse = _fusion(backend, device)
        xs = _branches(device)
        assert fuse[1][0][0][0].weight.is_inference()
        before = _matches_reference(fuse, xs)
        fuse[1][0][0][0].weight.mul_(-2)  # inference tensors count no versions
        after = _matches_reference(fuse, xs)
    assert not torch.allclose(after[1], before[1])
    assert level2_calls == [backend] * 8


@pytest.mark.parametrize(("backend", "device"), [p for p in BACKENDS if p.id == "cpp-cpu"])
def test_optimized_engine_refolds_its_fusion_paths_after_in_place_updates(backend, device, level2_calls):
    from hrnet_fast import optimize

    torch.manual_seed(0)
    model = _randomize_bn(HRNet("w18_small_v1", head="pose", backend=backend)).eval()
    engine = optimize(model)
    ref = copy.deepcopy(engine)  # before any call: prepacked weights do not copy
    ref.model.backend = "reference"
    x = torch.randn(1, 3, 64, 48)
    before = engine(x)
    torch.testing.assert_close(before, ref(x), rtol=1e-5, atol=1e-5 * before.abs().max().item())
    assert level2_calls
    for e in (engine, ref):
        fuse = next(m for m in e.modules() if isinstance(m, MultiResolutionFusion) and len(m.channels) == 3)
        with torch.no_grad():
            fuse[2][0][1][0].weight.mul_(3)  # the last step of the 0 -> 2 chain: a folded down_weight
            fuse[0][1][0].bias.add_(1)  # a projection: the folded bias
            fuse[2][0][0][0].weight.mul_(0.5)  # the first step of the 0 -> 2 chain: the FoldedConv itself
    after, want = engine(x), ref(x)
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
