"""Replay the ops of a module's forward without its Python, one recorded plan per input signature.

On a CPU HRNet's forward under ``optimize()`` is about 260 library calls, and the Python around
each (module calls, the backend choice, prepacked-weight lookups, argument checks) costs a few
microseconds per call: 2-3 ms of a 30-40 ms batch-1 forward. The first call with a new input
signature (shape, dtype, strides, device) runs plainly, so that what the forward prepares lazily
(prepacked weights) is made; the second runs the module under a recording dispatch mode that notes
every op reaching the dispatcher: its overload, its constant arguments (weights, prepacked
weights, sizes) and which earlier result each other tensor argument is. Later calls with that
signature run that list of ops and nothing else, dropping each intermediate after its last use.

A plan bakes in what the forward decided in Python: the backend of every call, the prepared
weights, the level-1/level-2 choice. It is therefore kept only while ``state()`` (given by the
owner: the backend selection and every parameter's version counter) returns what it returned when
the plan was recorded; otherwise the call records afresh. :meth:`OpPlans.clear` drops every plan
(after moving parameters, setting a single module's backend by hand, adding a module hook, or
changing a global switch the forward reads in Python, such as ``torch.backends.mkldnn``). Calls
under autocast, another dispatch mode, global module hooks or with a tensor subclass run as Python. A
forward whose ops return Python values (``.item()``: its control flow may depend on the data),
write into a tensor that is not one of its own results, or that runs module hooks (a replay would
skip them) gets no plan: it keeps running as Python, with a debug line.
Inference only: plans are recorded and replayed without autograd.

Where the ``cpp`` backend's library is loaded (``hrnet_fast._C``), a plan runs in C++
(``csrc/runtime/plan_replay.cpp``: each op a boxed dispatcher call, about 1 us) instead of a Python loop
(about 10 us per call of an op taking a prepared oneDNN primitive); ``OpPlans(native=False)``, or
an op the C++ replay cannot take (one returning something other than tensors), keeps the Python loop.
On a CPU with two or more threads the C++ replay also runs independent calls (HRNet's branches)
single-threaded side by side on two lanes where that was measured faster when the plan was
recorded (``plan_lanes.py``; ``OpPlans(lanes=False)`` turns it off).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torch.utils.weak import WeakIdKeyDictionary

from .plan_lanes import CallFlow, dependencies, lane_schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Slot:
    """A tensor argument that is an earlier result: index ``i`` of the plan's environment."""

    i: int


@dataclass(frozen=True)
class _Call:
    """One recorded op. ``refs``: (argument position or keyword, slot or a list template holding
    _Slot entries) for the arguments that are earlier results; ``results``: the slot of each
    tensor the op returned (None for a non-tensor entry), ``single``: whether it returned one
    tensor; ``frees``: slots no later call reads."""

    op: Callable
    args: tuple
    kwargs: dict
    refs: tuple
    results: tuple
    single: bool
    frees: tuple


@dataclass(frozen=True)
class _Plan:
    state: Hashable
    calls: tuple[_Call, ...]
    slots: int
    outputs: object  # the forward's output structure, tensors replaced by _Slot
    native: _NativePlan | None = None  # the same plan in C++, where it could be made
    laned_calls: int = 0  # calls its C++ replay runs on lanes (plan_lanes.py)


@dataclass(frozen=True)
class _Warm:
    """A signature called once in ``state``: the next call in that state records its plan."""

    state: Hashable


_UNPLANNABLE = object()  # a signature whose forward cannot be planned: it runs as Python

# Lanes are tried only for forwards whose recording took less: trying costs about sixteen runs of
# the plan (timing each call, then both ways), and they pay where the ops are small. HRNet-W32 pose on a
# 2-core AMD EPYC: batch 1 records in 0.03-0.05 s (lanes about 4% faster), batch 8 in 0.15 s in
# bfloat16 (within 1% either way) and 0.24 s in float32 (1-3% slower).
LANES_MAX_RECORDING_S = 0.2


class _NoPlan(Exception):
    """The forward cannot be replayed as recorded (the message says why)."""


class _Recorder(TorchDispatchMode):
    """Runs the forward and notes each op (see the module docstring). Results are tracked weakly,
    so recording keeps no intermediate alive beyond its use."""

    def __init__(self, x: Tensor):
        super().__init__()
        self.slots = WeakIdKeyDictionary()
        self.slots[x] = 0
        self.count = 1
        self.calls: list[tuple] = []
        self.problem: str | None = None

    def _ref(self, value):
        """An argument as the plan keeps it: _Slot for an earlier result, lists element-wise."""
        if isinstance(value, Tensor) and value in self.slots:
            return _Slot(self.slots[value])
        if isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) and v in self.slots for v in value):
            return [self._ref(v) for v in value]
        return value

    def _result_slot(self, value) -> int | None:
        if not isinstance(value, Tensor):
            if value is not None and self.problem is None:
                self.problem = f"an op returned a Python {type(value).__name__} (data-dependent control flow)"
            return None
        if value not in self.slots:
            self.slots[value] = self.count
            self.count += 1
        return self.slots[value]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.problem is None:
            for i, arg in enumerate(func._schema.arguments):
                value = kwargs.get(arg.name, args[i] if i < len(args) else None)
                writes = arg.alias_info is not None and arg.alias_info.is_write
                if writes and isinstance(value, Tensor) and value not in self.slots:
                    self.problem = f"{func} writes into {arg.name}, which is not a result of the forward"
        refs = []
        for key, value in list(enumerate(args)) + list(kwargs.items()):
            ref = self._ref(value)
            if ref is not value:
                refs.append((key, ref))
        out = func(*args, **kwargs)
        single = not isinstance(out, (tuple, list))
        results = tuple(self._result_slot(o) for o in ([out] if single else out))
        # only constants are kept: an argument that is a result is replaced by its slot (in refs)
        reffed = {key for key, _ in refs}
        constant_args = tuple(None if i in reffed else a for i, a in enumerate(args))
        constant_kwargs = {name: v for name, v in kwargs.items() if name not in reffed}
        self.calls.append((func, constant_args, constant_kwargs, tuple(refs), results, single))
        return out

    def plan(self, out, state: Hashable) -> _Plan:
        if self.problem is not None:
            raise _NoPlan(self.problem)
        outputs = tree_map(lambda t: _Slot(self.slots[t]) if isinstance(t, Tensor) and t in self.slots else t, out)
        kept = {s.i for s in _slots_in(outputs)}
        last: dict[int, int] = {}  # slot -> the last call that reads or writes it
        for k, (_, _, _, refs, results, _) in enumerate(self.calls):
            for s in _slots_in([ref for _, ref in refs]):
                last[s.i] = k
            for s in results:
                if s is not None:
                    last[s] = k
        frees: dict[int, list[int]] = {}
        for slot, k in last.items():
            if slot not in kept and slot != 0:
                frees.setdefault(k, []).append(slot)
        calls = [
            _Call(func, args, kwargs, refs, results, single, tuple(frees.get(k, ())))
            for k, (func, args, kwargs, refs, results, single) in enumerate(self.calls)
        ]
        return _Plan(state, tuple(calls), self.count, outputs)


def _slots_in(value) -> list[_Slot]:
    """The slots in a structure of lists, tuples and dicts (a forward's output, an op's arguments)."""
    return [leaf for leaf in tree_flatten(value)[0] if isinstance(leaf, _Slot)]


_HOOK_KINDS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _global_hooks() -> bool:
    """Whether module hooks registered for every module (``register_module_forward_hook``) exist."""
    return any(getattr(torch.nn.modules.module, f"_global{kind}", None) for kind in _HOOK_KINDS)


def _hooked(fn) -> bool:
    """Whether calling ``fn`` runs module hooks (its own modules', or global ones)."""
    modules = fn.modules() if isinstance(fn, torch.nn.Module) else ()
    return _global_hooks() or any(getattr(m, kind, None) for m in modules for kind in _HOOK_KINDS)


# c10::MemoryFormat's values: the one constant type torch's Any conversion does not infer
_MEMORY_FORMATS = {
    torch.contiguous_format: 0,
    torch.preserve_format: 1,
    torch.channels_last: 2,
    torch.channels_last_3d: 3,
}


def _constant(value):
    """A recorded constant as ``PlanReplay.add_call`` takes it (sequences as tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_constant(v) for v in value)
    if isinstance(value, torch.memory_format):
        if value not in _MEMORY_FORMATS:
            raise _NoPlan(f"no C++ value known for {value}")
        return _MEMORY_FORMATS[value]
    return value


def _call_arguments(call: _Call) -> tuple[list, list[list[int]]]:
    """One value per schema argument of a recorded call (defaults filled in, None where an earlier
    result goes) and its refs as ``PlanReplay.add_call`` takes them: [argument, element or -1 for
    the whole argument, slot]."""
    schema = call.op._schema
    values = []
    for i, arg in enumerate(schema.arguments):
        if i < len(call.args):
            values.append(call.args[i])
        elif arg.name in call.kwargs:
            values.append(call.kwargs[arg.name])
        elif arg.has_default_value():
            values.append(arg.default_value)
        else:
            raise _NoPlan(f"{call.op} was called without its argument {arg.name}")
    names = [a.name for a in schema.arguments]
    refs = []
    for key, ref in call.refs:
        index = key if isinstance(key, int) else names.index(key)
        if isinstance(ref, _Slot):
            refs.append([index, -1, ref.i])
            values[index] = None
        else:
            refs += [[index, j, r.i] for j, r in enumerate(ref) if isinstance(r, _Slot)]
            values[index] = [None if isinstance(r, _Slot) else r for r in ref]
    return [_constant(v) for v in values], refs


def _data_flow(call: _Call) -> CallFlow:
    """What a recorded call reads, writes (by its schema), views, makes and frees, in slots."""
    schema = call.op._schema
    names = [a.name for a in schema.arguments]
    reads, writes = set(), set()
    for key, ref in call.refs:
        slots = {s.i for s in _slots_in([ref])}
        reads |= slots
        alias = schema.arguments[key if isinstance(key, int) else names.index(key)].alias_info
        if alias is not None and alias.is_write:
            writes |= slots
    views, fresh = [], []
    for slot, ret in zip(call.results, schema.returns, strict=False):
        if slot is not None and slot not in reads:  # an in-place op's result is its argument's slot
            (views if ret.alias_info is not None and reads else fresh).append(slot)
    return CallFlow(frozenset(reads), frozenset(writes), tuple(views), tuple(fresh), tuple(call.frees))


_KERNEL_KEYS = ("CPU", "CompositeImplicitAutograd[alias]", "CompositeExplicitAutograd[alias]")


@functools.cache
def _python_kernel(op) -> bool:
    """Whether ``op`` runs a Python function on a CPU (its CPU or composite kernel was registered
    from a .py file, per the dispatcher's record): such calls stay off lanes."""
    for line in torch._C._dispatch_dump(f"{op._schema.name}.{op._schema.overload_name}".rstrip(".")).splitlines():
        key, _, where = line.partition(": registered at ")
        if key in _KERNEL_KEYS and where.split(" :: ")[0].rsplit(":", 1)[0].endswith(".py"):
            return True
    return False


def _lanes_are_faster(replay, x: Tensor, laned: tuple, unlaned: tuple, rounds: int = 5) -> bool:
    """Whether ``replay`` runs faster on ``x`` with the ``laned`` schedule than with ``unlaned``
    (each a ``set_lanes`` argument pair): the fastest of ``rounds`` alternating runs each way, after
    one untimed run each (the fastest run is the one other processes disturbed least; medians of
    three let a noisy spell flip a 4% difference). Leaves either set."""
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for timed in [False] + [True] * rounds:
        for with_lanes in (False, True):
            replay.set_lanes(*(laned if with_lanes else unlaned))
            start = time.perf_counter()
            replay.run(x)
            if timed:
                seconds[with_lanes].append(time.perf_counter() - start)
    return min(seconds[True]) < min(seconds[False])


class _NativePlan:
    """A :class:`_Plan` as a ``torch.classes.hrnet_fast.PlanReplay`` (``csrc/runtime/plan_replay.cpp``)."""

    def __init__(self, plan: _Plan):
        self.leaves, self.spec = tree_flatten(plan.outputs)
        self.replay = torch.classes.hrnet_fast.PlanReplay(plan.slots, [s.i for s in _slots_in(self.leaves)])
        for call in plan.calls:
            schema = call.op._schema
            values, refs = _call_arguments(call)
            results = [-1 if r is None else r for r in call.results] if schema.returns else []
            try:
                self.replay.add_call(schema.name, schema.overload_name, values, refs, results, list(call.frees))
            except (RuntimeError, TypeError, ValueError) as exc:  # what PlanReplay cannot take
                raise _NoPlan(f"{call.op}: {exc}") from None

    def set_lanes(self, plan: _Plan, x: Tensor) -> int:
        """Lay the plan's calls out on two lanes (plan_lanes.py) from each call's time on all threads
        and on one (the better of two runs on ``x`` each), and keep them if the plan then runs
        faster on ``x`` (:func:`_lanes_are_faster`); how many calls run on lanes."""
        team, single = self.call_times(x)
        flows = [_data_flow(call) for call in plan.calls]
        pinned = [_python_kernel(call.op) for call in plan.calls]
        lanes, waits = lane_schedule(dependencies(flows), team, single, pinned)
        if all(lane < 0 for lane in lanes):
            return 0
        unlaned = ([-1] * len(lanes), [[] for _ in lanes])
        faster = _lanes_are_faster(self.replay, x, (lanes, waits), unlaned)
        self.replay.set_lanes(*((lanes, waits) if faster else unlaned))
        return sum(lane >= 0 for lane in lanes) if faster else 0

    def call_times(self, x: Tensor) -> tuple[list[float], list[float]]:
        """Each call's seconds on ``x`` with all threads and with one, the better of two runs each."""
        return tuple(
            [min(a, b) for a, b in zip(self.replay.time_calls(x, one), self.replay.time_calls(x, one), strict=True)]
            for one in (False, True)
        )

    def __call__(self, x: Tensor):
        tensors = iter(self.replay.run(x))
        return tree_unflatten([next(tensors) if isinstance(s, _Slot) else s for s in self.leaves], self.spec)


def _native(plan: _Plan, x: Tensor, lanes: bool) -> _Plan:
    """``plan`` with its C++ replay where ``hrnet_fast._C`` is loaded and takes every op, else as it
    is; with ``lanes``, on a CPU with two or more threads, its calls laid out on lanes (measured on
    ``x``)."""
    from .._ext import loaded_library

    try:
        if loaded_library() is None:
            raise _NoPlan("hrnet_fast._C is not loaded (no op of the cpp backend has run)")
        native = _NativePlan(plan)
    except _NoPlan as reason:
        log.debug("OpPlans: replaying in Python: %s", reason)
        return plan
    laned = native.set_lanes(plan, x) if lanes and x.device.type == "cpu" and torch.get_num_threads() >= 2 else 0
    return dataclasses.replace(plan, native=native, laned_calls=laned)


def _replay(plan: _Plan, x: Tensor):
    """The plan's ops run on ``x``: each reads its constants and the earlier results it recorded."""
    if plan.native is not None:
        return plan.native(x)
    env: list = [None] * plan.slots
    env[0] = x
    for call in plan.calls:
        args, kwargs = call.args, call.kwargs
        if call.refs:
            args, kwargs = list(args), dict(kwargs)
            for key, ref in call.refs:
                value = env[ref.i] if isinstance(ref, _Slot) else [env[r.i] if isinstance(r, _Slot) else r for r in ref]
                if isinstance(key, int):
                    args[key] = value
                else:
                    kwargs[key] = value
        out = call.op(*args, **kwargs)
        if call.single:
            if call.results[0] is not None:  # None: the op returned nothing
                env[call.results[0]] = out
        else:
            for slot, value in zip(call.results, out, strict=True):
                if slot is not None:
                    env[slot] = value
        for slot in call.frees:
            env[slot] = None
    return tree_map(lambda s: env[s.i] if isinstance(s, _Slot) else s, plan.outputs)


class OpPlans:
    """``plans(x) == fn(x)`` by replaying ``fn``'s recorded ops (see the module docstring).

    ``state()`` is called on every call; a plan recorded under another state is recorded afresh.
    At most ``max_plans`` signatures are kept (more clears them all: a stream of new sizes records
    each once, as the first call of a size does anyway). ``native``: replay in C++ where it can
    (see the module docstring), else always in Python; ``lanes``: let the C++ replay run calls on
    two lanes where measured faster.
    """

    def __init__(
        self,
        fn: Callable[[Tensor], object],
        state: Callable[[], Hashable],
        max_plans: int = 4,
        native: bool = True,
        lanes: bool = True,
    ):
        self.fn, self.state, self.max_plans, self.native, self.lanes = fn, state, max_plans, native, lanes
        self._plans: dict[tuple, object] = {}  # signature -> _Warm, _Plan or _UNPLANNABLE

    def __getstate__(self):
        """Copies and pickles start without plans (they hold the prepared weights, some opaque)."""
        return {**self.__dict__, "_plans": {}}

    @property
    def num_plans(self) -> int:
        return sum(isinstance(entry, _Plan) for entry in self._plans.values())

    @property
    def laned_calls(self) -> int:
        """How many calls the plans run on lanes (plan_lanes.py), all plans together."""
        return sum(entry.laned_calls for entry in self._plans.values() if isinstance(entry, _Plan))

    @property
    def num_native_plans(self) -> int:
        """How many of the plans replay in C++."""
        return sum(isinstance(entry, _Plan) and entry.native is not None for entry in self._plans.values())

    def clear(self) -> None:
        self._plans.clear()

    def __call__(self, x: Tensor):
        if (
            type(x) is not Tensor
            or _get_current_dispatch_mode() is not None
            or torch.is_autocast_enabled(x.device.type)
            or _global_hooks()
        ):
            return self.fn(x)  # subclasses, other dispatch modes (fake tensors), autocast, global hooks
        key = (tuple(x.shape), x.dtype, x.device, x.stride())
        entry = self._plans.get(key)
        if entry is _UNPLANNABLE:
            return self.fn(x)
        state = self.state()
        if isinstance(entry, _Plan) and entry.state == state:
            return _replay(entry, x)
        if not (isinstance(entry, _Warm) and entry.state == state):
            # first call in this state: plain, so that what the forward prepares lazily on its first
            # call (prepacked weights, folded fusion weights) is made now and not recorded as ops
            self._store(key, _Warm(state))
            return self.fn(x)
        recorder = _Recorder(x)
        start = time.perf_counter()
        with recorder:
            out = self.fn(x)
        lanes = self.lanes and time.perf_counter() - start < LANES_MAX_RECORDING_S
        try:
            if _hooked(self.fn):
                raise _NoPlan("it has module hooks, which a replay would skip")
            plan = recorder.plan(out, state)
            self._store(key, _native(plan, x, lanes) if self.native else plan)
        except _NoPlan as reason:
            log.debug("OpPlans: running %s as Python: %s", type(self.fn).__name__, reason)
            self._store(key, _UNPLANNABLE)
        return out

    def _store(self, key: tuple, entry) -> None:
        if len(self._plans) >= self.max_plans and key not in self._plans:
            self._plans.clear()
        self._plans[key] = entry
