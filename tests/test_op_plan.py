"""CPU op plans (hrnet_fast/nn/op_plan.py): optimize()'s forward recorded once per input signature
and replayed, with the same results as the Python forward on fresh data, recorded afresh when a
weight or the backend selection changes, and never for forwards a replay would get wrong."""

from __future__ import annotations

import pytest
import torch
from test_optimize import trained_like
from torch import nn
from torch.utils._pytree import tree_flatten
from triton_helpers import TRITON_UNAVAILABLE, interpreted

import hrnet_fast.nn.op_plan as op_plan
from hrnet_fast import HRNet, optimize, set_backend
from hrnet_fast._ext import load
from hrnet_fast.nn.op_plan import OpPlans


@pytest.fixture(scope="module")
def pose():
    return trained_like(HRNet("w18_small_v1", head="pose"))


@pytest.fixture
def replays(monkeypatch):
    """How many forwards ran as a replay."""
    count = [0]
    replay = op_plan._replay

    def counting(plan, x):
        count[0] += 1
        return replay(plan, x)

    monkeypatch.setattr(op_plan, "_replay", counting)
    return count


def _images(dtype=torch.float32, channels_last=True, size=(64, 48), batch=2):
    x = torch.randn(batch, 3, *size).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _plain(engine, x):
    """The engine's forward as Python, bypassing its plans."""
    with torch.inference_mode():
        out = engine.model(x.to(dtype=engine.compute_dtype, memory_format=engine.memory_format))
        return out.to(engine.dtype, copy=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_engine_replays_its_forward_with_the_python_forwards_results(pose, replays, dtype, channels_last):
    engine = optimize(pose, dtype=dtype, channels_last=channels_last)
    _check_replays(engine, dtype, channels_last)
    assert replays[0] == 2
    assert engine.plans.num_native_plans == 1  # replayed in C++ (csrc/runtime/plan_replay.cpp)


def test_a_plan_replayed_in_python_gives_the_same_results(pose, replays):
    engine = optimize(pose, dtype=torch.bfloat16)
    engine.plans.native = False
    _check_replays(engine, torch.bfloat16, True)
    assert replays[0] == 2
    assert engine.plans.num_native_plans == 0


@pytest.mark.skipif(TRITON_UNAVAILABLE is not None or not interpreted(), reason="Triton runs on the CPU interpreted")
def test_engine_on_triton_replays_its_python_implemented_custom_ops(pose, replays):
    engine = optimize(pose, backend="triton")
    _check_replays(engine, torch.float32, True)
    assert replays[0] == 2
    ops = {str(call.op) for call in next(iter(engine.plans._plans.values())).calls}
    assert "hrnet_fast.fusion_branch_triton.default" in ops
    assert engine.plans.num_native_plans == 1  # C++ calls back into the ops' Python kernels


def _check_replays(engine, dtype, channels_last):
    for call in range(4):
        x = _images(dtype, channels_last)  # fresh data each call: a replay must not return stale maps
        out = engine(x)
        assert torch.equal(out, _plain(engine, x))
        assert engine.plans.num_plans == (call >= 1)  # the first call runs plainly, the second records


def test_each_input_shape_gets_its_own_plan(pose, replays):
    engine = optimize(pose)
    for size in [(64, 48), (32, 32), (64, 48), (32, 32)] * 2:
        x = _images(size=size)
        assert torch.equal(engine(x), _plain(engine, x))
    assert engine.plans.num_plans == 2
    assert replays[0] == 4


def test_an_in_place_weight_change_records_the_plan_afresh(pose, replays):
    engine = optimize(pose)
    x = _images()
    for _ in range(3):
        before = engine(x)
    with torch.no_grad():
        engine.model.conv1.weight.mul_(0.5)  # its prepacked copy and the recorded plan are stale now
    after = engine(x)
    assert not torch.equal(after, before)
    assert torch.equal(after, _plain(engine, x))
    for _ in range(2):
        assert torch.equal(engine(x), after)
    assert replays[0] == 2  # one before the change, one after it was recorded again


def test_a_new_backend_selection_records_the_plan_afresh(pose):
    engine = optimize(pose)
    x = _images()
    for _ in range(3):
        engine(x)
    ops = {str(call.op) for call in next(iter(engine.plans._plans.values())).calls}
    assert any(op.startswith("hrnet_fast.") for op in ops)
    set_backend("reference")
    try:
        for _ in range(2):
            out = engine(x)
        assert torch.equal(out, _plain(engine, x))
        ops = {str(call.op) for call in next(iter(engine.plans._plans.values())).calls}
        assert not any(op.startswith("hrnet_fast.") for op in ops)
    finally:
        set_backend(None)


def test_plans_can_be_turned_off_and_are_dropped_when_the_engine_is_moved(pose):
    off = optimize(pose, cpu_plan=False)
    on = optimize(pose)
    x = _images()
    for _ in range(3):
        off(x), on(x)
    assert off.plans.num_plans == 0
    assert on.plans.num_plans == 1
    on.float()
    assert on.plans.num_plans == 0


class _SplitCat(nn.Module):
    """List arguments (cat), several results (split), an in-place op on a result, a constant."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(1, 2, 1, 1), requires_grad=False)

    def forward(self, x):
        a, b = x.split(2, dim=1)
        b = b * self.scale
        b.add_(1.0)
        return torch.cat([b, a], dim=1), a.sum()


class _Assorted(nn.Module):
    """What the C++ replay converts: list arguments mixing results and constants, keyword and
    default arguments, scalars, dtypes and memory formats, an op with two results, an in-place op,
    a constant tensor, an output structure with a Python constant."""

    def __init__(self):
        super().__init__()
        self.register_buffer("bias", torch.randn(1, 4, 1, 1))

    def forward(self, x):
        y = torch.nn.functional.relu(x * 2.5 + self.bias)
        values, indices = y.max(dim=1, keepdim=True)
        values.add_(1.0, alpha=0.5)
        z = torch.cat([y, self.bias.expand(x.shape[0], 4, *x.shape[2:]), values], dim=1)
        z = z.contiguous(memory_format=torch.channels_last).to(torch.float64)
        return {"z": z, "indices": indices, "scale": 2.5}


def _equal(got, expected) -> bool:
    """The same structure, tensors equal in values, dtype and strides, other leaves equal."""
    got_leaves, got_spec = tree_flatten(got)
    expected_leaves, expected_spec = tree_flatten(expected)
    return got_spec == expected_spec and all(
        torch.equal(g, e) and g.dtype == e.dtype and g.stride() == e.stride() if isinstance(e, torch.Tensor) else g == e
        for g, e in zip(got_leaves, expected_leaves, strict=True)
    )


@pytest.mark.parametrize(("module", "native"), [(_SplitCat(), False), (_Assorted(), True)])
def test_a_replay_feeds_each_op_the_results_it_was_recorded_with(replays, module, native):
    load()  # plans replay in C++ only where hrnet_fast._C is loaded already
    plans = OpPlans(module, state=lambda: 0)
    with torch.inference_mode():
        for _ in range(4):
            x = torch.randn(3, 4, 5, 5)
            got, expected = plans(x), module(x)
            assert _equal(got, expected)
    assert replays[0] == 2
    assert plans.num_native_plans == native  # split returns a list of tensors: that plan replays in Python


class _DataDependent(nn.Module):
    def forward(self, x):
        return x + 1 if x.sum().item() > 0 else x - 1


class _CountsCalls(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls.add_(1)  # writes into a tensor the forward did not make
        return x * 2


def test_forwards_a_replay_would_get_wrong_run_as_python(replays):
    data_dependent, counting, hooked = _DataDependent(), _CountsCalls(), nn.Linear(4, 4)
    hook_calls = []
    hooked.register_forward_hook(lambda *args: hook_calls.append(1))
    with torch.inference_mode():
        for module in (data_dependent, counting, hooked):
            plans = OpPlans(module, state=lambda: 0)
            for sign in (1, 1, 1, -1):
                x = sign * torch.rand(2, 4).add(0.1)
                assert torch.equal(plans(x), data_dependent(x) if module is data_dependent else module(x))
            assert plans.num_plans == 0
    assert counting.calls.item() == 8  # four through the plans, four directly
    assert len(hook_calls) == 8
    assert replays[0] == 0


def test_at_most_max_plans_signatures_are_kept():
    plans = OpPlans(nn.ReLU(), state=lambda: 0, max_plans=2)
    with torch.inference_mode():
        for n in [1, 1, 2, 2, 3, 3, 3]:
            x = torch.randn(n, 3)
            assert torch.equal(plans(x), x.relu())
            assert len(plans._plans) <= 2
    assert plans.num_plans == 1  # the third shape's, after the first two were dropped


def test_calls_under_autocast_run_as_python(replays):
    module = _SplitCat()
    plans = OpPlans(module, state=lambda: 0)
    with torch.inference_mode():
        for _ in range(3):
            plans(torch.randn(3, 4, 5, 5))
        assert plans.num_plans == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = torch.randn(3, 4, 5, 5)
            got, expected = plans(x), module(x)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    assert got[0].dtype == expected[0].dtype
    assert replays[0] == 1  # the one before autocast


def test_a_global_module_hook_added_after_the_plan_still_runs(replays):
    module = _SplitCat()
    plans = OpPlans(module, state=lambda: 0)
    seen = []
    with torch.inference_mode():
        for _ in range(3):
            plans(torch.randn(3, 4, 5, 5))
        handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: seen.append(m))
        try:
            plans(torch.randn(3, 4, 5, 5))
        finally:
            handle.remove()
        plans(torch.randn(3, 4, 5, 5))
    assert seen == [module]
    assert replays[0] == 2  # before the hook and after its removal


def test_plans_replay_in_python_where_the_cpp_library_is_not_loaded(monkeypatch, replays):
    import hrnet_fast._ext as ext

    monkeypatch.setattr(ext, "loaded_library", lambda: None)  # as where it failed, or nothing loaded it
    module = _Assorted()
    plans = OpPlans(module, state=lambda: 0)
    with torch.inference_mode():
        for _ in range(4):
            x = torch.randn(3, 4, 5, 5)
            assert _equal(plans(x), module(x))
    assert replays[0] == 2
    assert plans.num_plans == 1 and plans.num_native_plans == 0


def _plan_replay(slots: int, outputs: list[int]):
    load()
    return torch.classes.hrnet_fast.PlanReplay(slots, outputs)


def test_plan_replay_runs_numbers_as_pythons_wrapped_scalars():
    replay = _plan_replay(3, [2])
    replay.add_call("aten::mul", "Tensor", [None, 2.5], [[0, -1, 0]], [1], [])
    replay.add_call("aten::cat", "", [(None, None), 1], [[0, 0, 1], [0, 1, 0]], [2], [1])
    x = torch.randint(-5, 5, (2, 3))  # int64: times a wrapped 2.5 gives float32, times a tensor float64
    (out,) = replay.run(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.cat([x * 2.5, x], 1))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (("aten::relu", "", [None], [[0, -1, 5]], [1], []), "ref slot 5 is outside"),
        (("aten::relu", "", [None, None], [[0, -1, 0]], [1], []), "takes 1 arguments, got 2"),
        (("aten::relu", "", [None], [[0, -1, 0]], [1, 2], []), "returns 1 values, got 2"),
        (("aten::add", "Tensor", [None, "x", 1], [[0, -1, 0]], [1], []), "argument other is a str, not a Tensor"),
        (("aten::cat", "", [(None,), 0], [[0, 3, 0]], [1], []), "has no element 3"),
        (("aten::relu", "", [None], [[0, 0, 0]], [1], []), "is not a list"),
        (("aten::split", "Tensor", [None, 2, 0], [[0, -1, 0]], [1], []), "only tensors are replayed"),
    ],
)
def test_plan_replay_refuses_calls_that_do_not_fit_their_schema(call, message):
    with pytest.raises(RuntimeError, match=message):
        _plan_replay(3, [1]).add_call(*call)
