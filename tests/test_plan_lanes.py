"""Two-lane op plans (hrnet_fast/nn/plan_lanes.py, PlanReplay.set_lanes in
csrc/runtime/plan_replay.cpp): the dependencies a schedule must keep, the schedules the cost model
picks, and laned replays giving the same results as unlaned ones on fresh data."""

from __future__ import annotations

import pytest
import torch
from test_optimize import trained_like

import hrnet_fast.nn.op_plan as op_plan
from hrnet_fast import HRNet, optimize
from hrnet_fast._ext import load
from hrnet_fast.nn.plan_lanes import CallFlow, dependencies, lane_schedule


def flow(reads=(), writes=(), views=(), fresh=(), frees=()) -> CallFlow:
    return CallFlow(frozenset(reads), frozenset(writes), tuple(views), tuple(fresh), tuple(frees))


def test_a_call_depends_on_what_it_reads_overwrites_views_and_frees():
    deps = dependencies(
        [
            flow(reads=[0], fresh=[1]),  # 0: a = f(x)
            flow(reads=[0], fresh=[2]),  # 1: b = g(x)
            flow(reads=[1], views=[3]),  # 2: v = a.view(...)
            flow(reads=[3], fresh=[4]),  # 3: c = h(v)
            flow(reads=[1, 2], writes=[1]),  # 4: a += b: after 0 (made a), 1 (made b), 2 and 3 (read a's memory)
            flow(reads=[2], fresh=[5], frees=[2]),  # 5: d = k(b), b dropped after it: after 1, and 4 (read b)
            flow(reads=[3], fresh=[6]),  # 6: e = m(v): after 2 (made v) and 4 (wrote into a, which v views)
        ]
    )
    assert deps == [set(), set(), {0}, {2}, {0, 1, 2, 3}, {1, 4}, {2, 4}]


def test_independent_chains_go_on_their_own_lanes_and_a_join_waits_for_the_other():
    chain = [flow(reads=[0], fresh=[1]), flow(reads=[1], fresh=[2])]
    other = [flow(reads=[0], fresh=[3]), flow(reads=[3], fresh=[4])]
    join = [flow(reads=[2, 4], fresh=[5])]
    deps = dependencies(chain + other + join)
    # one thread at 80% of half two threads' speed; the join gains nothing from a second thread
    team, single = [10e-6] * 4 + [5e-6], [16e-6] * 4 + [2e-6]
    lanes, waits = lane_schedule(deps, team, single)
    assert lanes[:4] in ([0, 0, 1, 1], [1, 1, 0, 0])
    assert lanes[4] in (0, 1)
    assert waits[:4] == [[], [], [], []]
    assert waits[4] == ([3] if lanes[4] == lanes[0] else [1])


@pytest.mark.parametrize(
    ("single", "laned"),
    [(1.9, True), (2.2, False)],  # one thread at 1.05x / 0.91x of half two threads' speed
)
def test_lanes_only_where_predicted_faster(single, laned):
    deps = dependencies([flow(reads=[0], fresh=[1 + i]) for i in range(6)])  # six calls on the input
    lanes, _ = lane_schedule(deps, [50e-6] * 6, [single * 50e-6] * 6)
    assert any(lane >= 0 for lane in lanes) == laned


def test_a_chain_stays_on_all_threads():
    deps = dependencies([flow(reads=[i], fresh=[i + 1]) for i in range(5)])
    assert lane_schedule(deps, [10e-6] * 5, [15e-6] * 5) == ([-1] * 5, [[]] * 5)


def test_pinned_calls_stay_on_all_threads():
    deps = dependencies([flow(reads=[0], fresh=[1 + i]) for i in range(6)])
    lanes, _ = lane_schedule(deps, [50e-6] * 6, [60e-6] * 6, pinned=[False, False, True, False, False, False])
    assert lanes[2] == -1
    assert lanes[:2] in ([0, 1], [1, 0])  # laned without it on either side
    assert lanes[-1] >= 0


@torch.library.custom_op("hrnet_fast_tests::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_ops_with_a_python_kernel_are_found():
    load()
    assert op_plan._python_kernel(torch.ops.hrnet_fast_tests.twice.default)
    assert not op_plan._python_kernel(torch.ops.aten.mm.default)
    assert not op_plan._python_kernel(torch.ops.aten.permute.default)  # composite, in C++
    assert not op_plan._python_kernel(torch.ops.hrnet_fast.upsample_sum_cpp.default)


def test_lane_schedule_wants_a_time_per_call():
    with pytest.raises(ValueError, match="3 calls but 2 team times"):
        lane_schedule([set()] * 3, [1.0] * 2, [1.0] * 3)


def _branches(n: int = 6):
    """A PlanReplay of two independent chains of matrix products on the input, and their sum."""
    load()
    replay = torch.classes.hrnet_fast.PlanReplay(2 * n + 2, [2 * n + 1])
    weights = [torch.randn(32, 32) / 6 for _ in range(2 * n)]
    for branch in range(2):
        for i in range(n):
            source = 0 if i == 0 else 1 + branch * n + i - 1
            k = branch * n + i
            replay.add_call("aten::mm", "", [None, weights[k]], [[0, -1, source]], [1 + k], [])
    replay.add_call("aten::add", "Tensor", [None, None, 1], [[0, -1, n], [1, -1, 2 * n]], [2 * n + 1], [])
    lanes = [0] * n + [1] * n + [0]
    waits = [[] for _ in range(2 * n)] + [[2 * n - 1]]

    def expected(x):
        a, b = x, x
        for i in range(n):
            a, b = a @ weights[i], b @ weights[n + i]
        return a + b

    return replay, lanes, waits, expected


@pytest.mark.parametrize(("threads", "inference"), [(2, True), (1, True), (2, False)])
def test_a_laned_replay_gives_the_unlaned_results(threads, inference):
    replay, lanes, waits, expected = _branches()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread, or outside inference mode: the calls run in plan order
    try:
        with torch.inference_mode(inference):
            for laned in (False, True):
                if laned:
                    replay.set_lanes(lanes, waits)
                for _ in range(3):
                    x = torch.randn(16, 32)
                    (out,) = replay.run(x)
                    torch.testing.assert_close(out, expected(x), rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(before)


def test_a_laned_replay_runs_in_the_callers_inference_mode():
    replay, lanes, waits, _ = _branches()
    replay.set_lanes(lanes, waits)
    with torch.inference_mode():
        (out,) = replay.run(torch.randn(16, 32))
    assert out.is_inference()  # made on the other lane's thread too, under the caller's mode


@torch.inference_mode()
def test_an_error_on_a_lane_is_raised_and_stops_the_other():
    replay, lanes, waits, _ = _branches()
    replay.set_lanes(lanes, waits)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        replay.run(torch.randn(16, 31))  # every mm of both lanes fails; the join never runs
    (out,) = replay.run(torch.randn(16, 32))  # and the plan still runs afterwards
    assert out.shape == (16, 32)


@pytest.mark.parametrize(
    ("lanes", "waits", "message"),
    [
        ([0] * 12, [[]] * 13, "a lane and a wait list per call"),
        ([0] * 12 + [2], [[]] * 13, "lane must be -1, 0 or 1"),
        ([0] * 6 + [1] * 6 + [0], [[]] * 12 + [[12]], "cannot wait for call 12"),
        ([0] * 6 + [1] * 6 + [-1], [[]] * 12 + [[5]], "cannot wait for call 5"),
        ([0] * 6 + [-1] + [1] * 5 + [0], [[]] * 12 + [[5]], "waits for call 5 across call 6"),
        ([0] * 6 + [1] * 6 + [0], [[]] * 12 + [[5]], "on its own lane"),
    ],
)
def test_set_lanes_refuses_schedules_that_cannot_run(lanes, waits, message):
    replay, *_ = _branches()
    with pytest.raises(RuntimeError, match=message):
        replay.set_lanes(lanes, waits)


@pytest.fixture
def lanes_kept(monkeypatch):
    """Lanes tried however long the recording took (a busy machine can take longer than
    ``LANES_MAX_RECORDING_S`` to record even this small model) and kept wherever the schedule has
    any, whatever the timing says (the engine keeps them only where measured faster, which a test
    cannot rely on), and every call timed as fast on one thread as on all (measured, the small
    calls of a small model may or may not favour lanes)."""
    monkeypatch.setattr(op_plan, "LANES_MAX_RECORDING_S", float("inf"))
    monkeypatch.setattr(op_plan, "_lanes_are_faster", lambda *args: True)

    def equal_times(self, x):
        team, _ = real_times(self, x)
        return team, team

    real_times = op_plan._NativePlan.call_times
    monkeypatch.setattr(op_plan._NativePlan, "call_times", equal_times)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 2])
def test_an_engine_on_lanes_gives_the_same_outputs_as_on_all_threads(lanes_kept, dtype, batch):
    model = trained_like(HRNet("w18_small_v1", head="pose"))
    laned, unlaned = optimize(model, dtype=dtype), optimize(model, dtype=dtype)
    unlaned.plans.lanes = False
    with torch.inference_mode():
        for _ in range(3):
            x = torch.randn(batch, 3, 128, 96).to(dtype).contiguous(memory_format=torch.channels_last)
            assert torch.equal(laned(x), unlaned(x))
    assert laned.plans.num_native_plans == unlaned.plans.num_native_plans == 1
    assert laned.plans.laned_calls > 0  # the branches' blocks side by side
    assert unlaned.plans.laned_calls == 0
    (plan,) = [p for p in laned.plans._plans.values() if isinstance(p, op_plan._Plan)]
    lanes = plan.native.replay.lanes()
    assert {0, 1} <= set(lanes) and sum(lane >= 0 for lane in lanes) == plan.laned_calls


def test_lanes_are_not_tried_for_forwards_that_took_long_to_record(lanes_kept, monkeypatch):
    tried = []
    monkeypatch.setattr(op_plan._NativePlan, "set_lanes", lambda self, plan, x: tried.append(1) or 0)
    model = trained_like(HRNet("w18_small_v1", head="pose"))
    x = torch.randn(1, 3, 128, 96).contiguous(memory_format=torch.channels_last)
    for limit, expected in ((0.0, []), (60.0, [1])):
        monkeypatch.setattr(op_plan, "LANES_MAX_RECORDING_S", limit)
        engine = optimize(model)
        with torch.inference_mode():
            for _ in range(3):
                engine(x)
        assert engine.plans.num_native_plans == 1
        assert tried == expected
