"""Timing that measures the work, not its launch, repeated until the median is known well enough.

On CUDA every sample is bracketed by CUDA events and the device is synchronized before the events
are read, so a sample is device time; on the CPU a sample is ``perf_counter`` wall time. Samples
are taken in rounds until a :class:`StopRule` is met; a result is their median, the interquartile
range (IQR) as their spread, and the median's confidence interval.

Inputs larger than the last-level cache (the CPU's L3 from the OS, the GPU's L2 from the driver)
rotate between several copies (:class:`Rotation`), so every call reads from memory, as the copy
bandwidth it is compared with does.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

FALLBACK_CACHE_BYTES = 32 * 2**20  # when the OS does not say: a large CPU L3 slice / GPU L2
MAX_ROTATION = 8  # input sets in a rotation at most; smaller inputs stay cache-resident
FEWEST_SAMPLES = 3  # a time budget never stops a row before this many calls: a spread needs some


@dataclass(frozen=True)
class StopRule:
    """When to stop timing one case on one backend.

    After ``min_samples`` timed calls (fewer, but at least 3, when the first calls show that the
    budget would not allow them), rounds continue until the first of: the median is known to
    ``precision`` (half the width of its ~95% confidence interval, relative to the median, see
    :class:`Timing`), ``budget_s`` seconds of timing are spent, or ``max_samples`` calls are timed.
    :meth:`fixed` times exactly ``n`` calls.
    """

    min_samples: int = 5
    max_samples: int = 1000
    precision: float = 0.01
    budget_s: float = 5.0

    @classmethod
    def fixed(cls, n: int) -> StopRule:
        return cls(min_samples=n, max_samples=n, precision=0.0, budget_s=math.inf)

    def done(self, timing: Timing, elapsed_s: float) -> bool:
        if timing.samples >= self.max_samples:
            return True
        if elapsed_s >= self.budget_s:
            return timing.samples >= min(FEWEST_SAMPLES, self.min_samples)
        return timing.samples >= self.min_samples and timing.precision <= self.precision


@dataclass(frozen=True)
class Timing:
    """The median of ``samples`` timed calls, their spread, and the median's ~95% confidence interval
    ``[low_s, high_s]``: the order statistics of ranks floor(n/2 - 0.98 sqrt(n)) and
    ceil(1 + n/2 + 0.98 sqrt(n)) (1-based, clamped to 1..n; the normal approximation of the
    binomial), which needs no assumption about the distribution (a busy machine's is skewed)."""

    median_s: float
    spread: float  # interquartile range / median (min-max under 4 samples): the calls' own noise
    samples: int
    low_s: float
    high_s: float

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    @property
    def precision(self) -> float:
        """Half the width of the median's confidence interval, relative to the median."""
        return (self.high_s - self.low_s) / (2 * self.median_s) if self.median_s > 0 else 0.0


def summarize(samples: list[float]) -> Timing:
    ordered, n = sorted(samples), len(samples)
    median = statistics.median(ordered)
    if n >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4)
        width = q3 - q1
    else:
        width = ordered[-1] - ordered[0]
    low_rank = max(1, math.floor(n / 2 - 0.98 * math.sqrt(n)))
    high_rank = min(n, math.ceil(1 + n / 2 + 0.98 * math.sqrt(n)))
    spread = width / median if median > 0 else 0.0
    return Timing(median, spread, n, ordered[low_rank - 1], ordered[high_rank - 1])


def _round(fn: Callable[[], object], device: torch.device, n: int) -> list[float]:
    """Seconds of each of ``n`` calls (CUDA: device time between events, read after a synchronize)."""
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in events]
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def time_fn(fn: Callable[[], object], device: torch.device, *, warmup: int = 3, rule: StopRule | None = None) -> Timing:
    """Median time of one ``fn()`` call on ``device`` after ``warmup`` calls, timed until ``rule`` says stop.

    No round is planned past the time budget at the time per call seen so far (the warmup's for the
    first round); later rounds add half the samples so far (few synchronizations on CUDA).
    """
    rule = rule or StopRule()
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    per_call = (time.perf_counter() - start) / warmup if warmup else 0.0
    start, samples = time.perf_counter(), []
    want = rule.min_samples
    while True:
        left_s = rule.budget_s - (time.perf_counter() - start)
        affordable = want if math.isinf(left_s) or per_call <= 0 else math.ceil(max(left_s, 0.0) / per_call)
        n = max(1, min(want, affordable, rule.max_samples - len(samples)))
        if not samples:
            n = max(n, min(FEWEST_SAMPLES, rule.min_samples))
        samples += _round(fn, device, n)
        timing = summarize(samples)
        if rule.done(timing, time.perf_counter() - start):
            return timing
        per_call, want = timing.median_s, max(1, math.ceil(len(samples) / 2))


def _sysfs_last_level_cache(cpu_dir: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of the highest-level data or unified cache listed in sysfs, in bytes."""
    best: tuple[int, int] | None = None
    for index in sorted(cpu_dir.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or not text:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        nbytes = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        if best is None or level > best[0]:
            best = (level, nbytes)
    return best[1] if best else None


def _sysconf_last_level_cache() -> int | None:
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        if name in os.sysconf_names and (size := os.sysconf(name)) > 0:
            return size
    return None


@functools.cache
def cache_bytes(device: torch.device) -> int:
    """The last-level cache in front of ``device``'s memory: the GPU's L2 as the driver reports it;
    the CPU's last-level cache from sysfs, else ``os.sysconf``, else :data:`FALLBACK_CACHE_BYTES`."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).L2_cache_size
    return _sysfs_last_level_cache() or _sysconf_last_level_cache() or FALLBACK_CACHE_BYTES


def copy_bandwidth(device: torch.device, nbytes: int | None = None, iters: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written.

    The source defaults to 4x the last-level cache, so the copy streams from memory.
    """
    nbytes = nbytes or 4 * cache_bytes(device)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    timing = time_fn(lambda: dst.copy_(src), device, warmup=2, rule=StopRule.fixed(iters))
    return 2 * src.numel() * src.element_size() / timing.median_s


def rotation_copies(nbytes: int, cache: int) -> int:
    """How many input sets of ``nbytes`` to cycle through so that between two uses of one set the
    others read at least twice the ``cache``: 1 when one set alone is that large; 1 (the inputs stay
    cache-resident, and are timed so) when it would take more than :data:`MAX_ROTATION` sets."""
    if nbytes >= 2 * cache:
        return 1
    copies = 1 + math.ceil(2 * cache / max(nbytes, 1))
    return copies if copies <= MAX_ROTATION else 1


class Rotation:
    """Cycle through independent argument sets (:func:`rotation_copies` of them), so each call reads
    inputs that the previous calls have evicted from the last-level cache (:func:`cache_bytes`), on
    a GPU and on a CPU alike."""

    def __init__(self, make_args: Callable[[], tuple], nbytes: int, device: torch.device):
        self.sets = [make_args() for _ in range(rotation_copies(nbytes, cache_bytes(device)))]
        self._next = 0

    def restart(self) -> None:
        """Start again from the first set, so each backend's first call sees the same inputs."""
        self._next = 0

    def __call__(self) -> tuple:
        args = self.sets[self._next]
        self._next = (self._next + 1) % len(self.sets)
        return args


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    warmup: int = 1,
    rule: StopRule | None = None,
    settle: int = 0,
) -> dict[str, Timing]:
    """Median time of one call of each ``fns[name]``, timed in turn (A, B, C, A, B, C, ...).

    Load that comes and goes on a shared machine then falls on every engine alike, so the ratios
    between them hold even when the absolute times wander. Rounds continue until ``rule`` is met
    for every engine, with ``rule.budget_s`` of time per engine. CUDA calls are bracketed by events.
    ``settle``: untimed calls of an engine right before each of its timed calls, so that what is
    timed is the engine's steady state, not its recovery from the caches and allocator state the
    engine before it left (A A' B B' ..., primes untimed).
    """
    rule = rule or StopRule()
    together = replace(rule, budget_s=rule.budget_s * len(fns))
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    start, samples = time.perf_counter(), {name: [] for name in fns}
    while True:
        for name, fn in fns.items():
            for _ in range(settle):
                fn()
            samples[name] += _round(fn, device, 1)
        timings = {name: summarize(s) for name, s in samples.items()}
        if all(together.done(t, time.perf_counter() - start) for t in timings.values()):
            return timings
