"""pytest-benchmark setup: the device under test, a synchronized clock, and a summary table.

Run: ``pytest benchmarks/ --benchmark-only``. On CUDA every round is timed with a clock that
synchronizes the device first (:func:`device_clock`), so rounds measure device work, not launches.
Each benchmark records what it moved or processed and its error against the reference; the
terminal summary prints GB/s (op level) or images/s (module/model level) and the speedup over the
reference of the same group.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

from hrnet_fast.bench import report
from hrnet_fast.bench.suites import COMPILE, default_backends
from hrnet_fast.bench.timer import copy_bandwidth


def device_clock(device: torch.device) -> Callable[[], float]:
    """A clock for pytest-benchmark that first waits for ``device``'s queued work, then reads
    ``perf_counter``: pytest-benchmark reads its timer before and after each round, so a round's
    time covers the device work its calls queued, not just the launches (the CPU needs no wait)."""
    if device.type != "cuda":
        return time.perf_counter

    def clock() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return clock


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
CLOCK = device_clock(DEVICE)
BACKENDS = [*default_backends(DEVICE), COMPILE]
DTYPES = [torch.float32, torch.float16, torch.bfloat16] if ON_GPU else [torch.float32, torch.bfloat16]

_RECORDS: list[dict] = []


@pytest.fixture(scope="session")
def copy_bw() -> float:
    """Device copy bandwidth (bytes/s, read + write), measured once per session."""
    return copy_bandwidth(DEVICE)


@pytest.fixture
def record(request):
    """``record(benchmark, backend, max_abs_err=..., nbytes=None, images=None, mem_mb=None)`` after a run."""

    def _record(
        benchmark,
        backend: str,
        *,
        max_abs_err: float,
        nbytes: int | None = None,
        images: int | None = None,
        mem_mb: float | None = None,
    ):
        median = benchmark.stats.stats.median
        info = {"backend": backend, "max_abs_err": max_abs_err, "mem_mb": mem_mb}
        if nbytes is not None:
            info |= {"bytes": nbytes, "gb_per_s": nbytes / median / 1e9}
        if images is not None:
            info["img_per_s"] = images / median
        benchmark.extra_info.update(info)
        _RECORDS.append({"group": benchmark.group, "ms": median * 1e3, **info})

    return _record


def pytest_terminal_summary(terminalreporter):
    if not _RECORDS:
        return
    ref = {r["group"]: r["ms"] for r in _RECORDS if r["backend"] == "reference"}
    rows = [
        {
            "group": r["group"],
            "backend": r["backend"],
            "ms": r["ms"],
            "rate": r.get("gb_per_s", r.get("img_per_s")),
            "unit": "GB/s" if "gb_per_s" in r else "img/s",
            "speedup": ref[r["group"]] / r["ms"] if r["group"] in ref else None,
            "mem_mb": r["mem_mb"],
            "max_abs_err": r["max_abs_err"],
        }
        for r in _RECORDS
    ]
    columns = [
        ("group", "group", "s"),
        ("backend", "backend", "s"),
        ("ms", "median ms", ".3f"),
        ("rate", "rate", ".1f"),
        ("unit", "", "s"),
        ("speedup", "vs reference", ".2f"),
        ("mem_mb", "act. MB", ".0f"),
        ("max_abs_err", "max |err|", ".1e"),
    ]
    terminalreporter.write_sep("=", f"hrnet_fast benchmarks on {DEVICE}")
    terminalreporter.write_line(report.table(rows, columns))
