"""Two-lane schedules for recorded op plans: which calls run single-threaded side by side.

On a CPU with few cores an op split over all of them loses a few percent to the split (the threads
meet at a barrier, the work divides unevenly, both cores read every weight), and HRNet's forward is
about 260 such ops. Its branches are independent, though: branch 1's block convolutions need
nothing from branch 0's, so two of them can run at once, one per core, each on its own thread.

A schedule gives each call of a plan a lane: -1 (the op splits itself over all threads, as
without lanes) or 0 / 1 (it runs on one thread while the other lane's calls run on the other).
:func:`lane_schedule` finds it from the plan's data flow and from each call's time measured both
ways (``PlanReplay.time_calls``): it cuts the plan into pieces, each either run call by call on all
threads (the sum of their times) or laid out on the two lanes by earliest finish (each call where it
can start soonest, after the calls it depends on); a piece goes on lanes only where that is
predicted faster by more than the cost of starting and joining the two threads. The prediction takes
each call's time alone; two ops at once share the L3 cache and the memory bandwidth, so the owner
times the plan both ways and keeps lanes only where they are faster (on a 2-core AMD EPYC, HRNet-W32
pose: about 4% faster at batch 1; at batch 8 within 1% in bfloat16, 1-3% slower in float32).
Outputs are the same either way: every op computes the same values on one thread as on several.

A call depends on an earlier one whose result it reads, on the last earlier call that wrote a
tensor it reads or writes (results of views and in-place ops alias their argument, by the op's
schema), on the earlier calls that read a tensor it writes, and on every earlier reader of a slot it
frees (the replay drops the slot after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Cost of one run of laned calls beyond its calls: the OpenMP region's start and join (seconds).
LANE_RUN_OVERHEAD_S = 5e-6
# Cost of a call waiting for one of the other lane (the flag's cache line moving between cores).
CROSS_LANE_WAIT_S = 1e-6


@dataclass(frozen=True)
class CallFlow:
    """What one call of a plan does to the plan's slots: the slots it reads (``reads``; ``writes``:
    those it writes into), the slots of its results that view an argument (``views``) and of its
    fresh results (``fresh``), and the slots dropped after it (``frees``)."""

    reads: frozenset[int]
    writes: frozenset[int]
    views: tuple[int, ...]
    fresh: tuple[int, ...]
    frees: tuple[int, ...]


def dependencies(calls: Sequence[CallFlow]) -> list[set[int]]:
    """For each call, the earlier calls it depends on (see the module docstring)."""
    group: dict[int, int] = {}  # slot -> the slot of the tensor it views

    def root(slot: int) -> int:
        while slot in group:
            slot = group[slot]
        return slot

    producer: dict[int, int] = {}  # slot -> the call whose result it is
    last_writer: dict[int, int] = {}  # alias group -> the last call that wrote into it in place
    readers: dict[int, list[int]] = {}  # alias group -> the calls that read it since
    slot_readers: dict[int, list[int]] = {}  # slot -> every call that read it
    deps: list[set[int]] = []
    for k, call in enumerate(calls):
        touched = {root(s) for s in call.reads}
        written = {root(s) for s in call.writes}
        mine = {producer[s] for s in call.reads if s in producer}
        mine |= {last_writer[g] for g in touched | written if g in last_writer}
        for g in written:
            mine.update(readers.get(g, ()))
        for s in call.frees:
            mine.update(slot_readers.get(s, ()))
        mine.discard(k)
        deps.append(mine)
        for s in call.reads:
            slot_readers.setdefault(s, []).append(k)
            readers.setdefault(root(s), []).append(k)
        for g in written:
            last_writer[g], readers[g] = k, []
        for s in call.views:
            group[s] = root(min(call.reads))
        for s in call.views + call.fresh:
            producer[s] = k
    return deps


class _Layout:
    """Calls from ``begin`` on, added in plan order, each on the lane where it finishes first."""

    def __init__(self, deps: Sequence[set[int]], single: Sequence[float], begin: int):
        self.deps, self.single, self.begin = deps, single, begin
        self.free = [0.0, 0.0]  # when each lane is done with its calls so far
        self.finish: dict[int, float] = {}
        self.lane: dict[int, int] = {}

    def add(self, j: int) -> float:
        """Lay out call j; the span of the calls so far."""
        pick = None
        for candidate in (0, 1):
            start = self.free[candidate]
            for d in self.deps[j]:
                if d >= self.begin:
                    wait = CROSS_LANE_WAIT_S if self.lane[d] != candidate else 0.0
                    start = max(start, self.finish[d] + wait)
            if pick is None or start + self.single[j] < pick[0]:
                pick = (start + self.single[j], candidate)
        self.finish[j], self.lane[j] = pick
        self.free[pick[1]] = pick[0]
        return max(self.free)


def lane_schedule(
    deps: Sequence[set[int]],
    team: Sequence[float],
    single: Sequence[float],
    pinned: Sequence[bool] | None = None,
) -> tuple[list[int], list[list[int]]]:
    """Each call's lane (-1, 0 or 1) and the calls of the other lane it waits for, from the calls'
    dependencies and their times on all threads (``team``) and on one (``single``); ``pinned``
    calls stay on all threads (ops implemented in Python: they hold the GIL, and some, such as
    Triton's interpreter, keep per-thread state). See the module docstring. Pieces are chosen to
    minimise the predicted total by dynamic programming over where pieces start (a layout only
    grows as its piece extends, so each start is laid out once)."""
    n = len(deps)
    pinned = [False] * n if pinned is None else pinned
    if not (len(team) == len(single) == len(pinned) == n):
        raise ValueError(
            f"lane_schedule: {n} calls but {len(team)} team times, {len(single)} single, {len(pinned)} pinned flags"
        )
    best = [0.0] + [float("inf")] * n  # best[j]: the least predicted time of calls [0, j)
    start_of = [-1] * (n + 1)  # the laned piece ending at j starts at start_of[j]; -1: call j-1 on all threads
    for i in range(n):
        if i > 0 and best[i - 1] + team[i - 1] < best[i]:
            best[i], start_of[i] = best[i - 1] + team[i - 1], -1
        layout = _Layout(deps, single, i)
        for j in range(i, n):
            if pinned[j]:
                break
            total = best[i] + layout.add(j) + LANE_RUN_OVERHEAD_S
            if total < best[j + 1]:
                best[j + 1], start_of[j + 1] = total, i
    if n and best[n - 1] + team[n - 1] < best[n]:
        start_of[n] = -1
    lanes = [-1] * n
    j = n
    while j > 0:
        i = start_of[j]
        if i < 0:
            j -= 1
            continue
        layout = _Layout(deps, single, i)
        for k in range(i, j):
            layout.add(k)
        lanes[i:j] = [layout.lane[k] for k in range(i, j)]
        j = i
    waits: list[list[int]] = [[] for _ in range(n)]
    first = 0  # the first call of the run of laned calls that call k is in
    for k in range(n):
        if lanes[k] < 0:
            first = k + 1
            continue
        waits[k] = sorted(d for d in deps[k] if d >= first and lanes[d] != lanes[k])
    return lanes, waits
