"""Timing that measures the work, not its launch.

On CUDA every sample is bracketed by CUDA events and the device is synchronized before the events
are read, so a sample is device time; on the CPU a sample is ``perf_counter`` wall time. A result
is the median of ``iters`` samples after ``warmup`` calls, with the interquartile spread as the
noise estimate. :func:`synchronized_clock` is the same idea as a clock for pytest-benchmark.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

L2_BYTES = 60 * 2**20  # H200: larger inputs than this are rotated so each call reads from memory


@dataclass(frozen=True)
class Timing:
    median_s: float
    spread: float  # interquartile range / median: the run's own noise
    samples: int

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3


def _summary(samples: list[float]) -> Timing:
    median = statistics.median(samples)
    if len(samples) >= 4:
        q1, _, q3 = statistics.quantiles(samples, n=4)
        spread = (q3 - q1) / median if median > 0 else 0.0
    else:
        spread = (max(samples) - min(samples)) / median if median > 0 else 0.0
    return Timing(median, spread, len(samples))


def time_fn(fn: Callable[[], object], device: torch.device, *, warmup: int = 3, iters: int = 10) -> Timing:
    """Median time of one ``fn()`` call on ``device`` (CUDA: device time between events)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for start, end in zip(starts, ends, strict=True):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return _summary([s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)])
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return _summary(samples)


def synchronized_clock(sync: Callable[[], None]) -> Callable[[], float]:
    """A clock that first waits for queued device work (``sync``), then reads ``perf_counter``.

    pytest-benchmark reads its timer before and after each round, so with this clock a round's time
    covers all the device work its calls queued, not just the launches.
    """

    def clock() -> float:
        sync()
        return time.perf_counter()

    return clock


def device_clock(device: torch.device) -> Callable[[], float]:
    """:func:`synchronized_clock` for ``device`` (plain ``perf_counter`` on the CPU)."""
    if device.type == "cuda":
        return synchronized_clock(lambda: torch.cuda.synchronize(device))
    return time.perf_counter


def copy_bandwidth(device: torch.device, nbytes: int = 4 * L2_BYTES, iters: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    timing = time_fn(lambda: dst.copy_(src), device, warmup=2, iters=iters)
    return 2 * src.numel() * src.element_size() / timing.median_s


class Rotation:
    """Cycle through ``copies`` independent argument sets, so inputs larger than the L2 cache are
    read from memory on every call instead of from the cache the previous call warmed."""

    def __init__(self, make_args: Callable[[], tuple], nbytes: int, device: torch.device):
        copies = 2 if device.type == "cuda" and nbytes >= L2_BYTES else 1
        self.sets = [make_args() for _ in range(copies)]
        self._next = 0

    def __call__(self) -> tuple:
        args = self.sets[self._next]
        self._next = (self._next + 1) % len(self.sets)
        return args


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, *, warmup: int = 1, rounds: int = 5
) -> dict[str, Timing]:
    """Median time of one call of each ``fns[name]``, timed in turn (A, B, C, A, B, C, ...).

    Load that comes and goes on a shared machine then falls on every engine alike, so the ratios
    between them hold even when the absolute times wander. CUDA calls are bracketed by events.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize(device)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(device)
                samples[name].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {name: _summary(s) for name, s in samples.items()}
