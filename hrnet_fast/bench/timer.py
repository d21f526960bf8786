"""Timing that measures the work, not its launch: CUDA events around device work, perf_counter on CPU.

Every sample is one call; the device is synchronized before the first and after the last event,
and the result is the median of ``iters`` samples after ``warmup`` calls.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    samples: int

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3


def time_fn(fn: Callable[[], object], device: torch.device, *, warmup: int = 3, iters: int = 10) -> Timing:
    """Median wall time of ``fn()`` on ``device`` (CUDA: device time between events)."""
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
        samples = [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)]
    else:
        samples = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return Timing(statistics.median(samples), min(samples), len(samples))
