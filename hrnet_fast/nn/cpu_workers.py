"""Worker threads that run independent parts of an inference forward on a CPU, one core each.

Splitting each of HRNet's hundreds of small convolutions over all cores (torch's OpenMP threads)
puts a barrier after every op: when the machine is shared and the OS takes a core away for a
moment, every barrier waits for it, and a forward slows down several times. With a batch there is
a better split: the images are independent, so each core can run its own images with one thread
and no barriers at all. ``CpuWorkers.map(calls)`` runs such calls (chunks of a batch) on worker
threads that keep one intra-op thread each and take the calls in turn, so a core that stalls for a
while hands its share to the others.

``cpu_workers()`` is the process's pool for torch's intra-op thread count (one worker per thread),
None with a single thread or where torch's threads are not OpenMP's. Team sizes are set per thread
through OpenMP, so torch's process-wide setting stays as it is. Autograd and inference-mode state
carry over into every call.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch


def _omp_setter() -> Callable[[int], None] | None:
    """OpenMP's ``omp_set_num_threads`` (the calling thread's team size), where torch uses OpenMP."""
    try:
        return ctypes.CDLL(None).omp_set_num_threads
    except (AttributeError, OSError, TypeError):
        return None


class CpuWorkers:
    """``threads`` worker threads with one intra-op thread each."""

    def __init__(self, threads: int, set_threads: Callable[[int], None]):
        if threads < 2:
            raise ValueError(f"CpuWorkers needs at least 2 threads, got {threads}")
        self.size = threads
        ready = threading.Barrier(threads)

        def start() -> None:
            torch.get_num_threads()  # torch sets a new thread's OpenMP team size on its first use: now
            set_threads(1)

        self._executor = ThreadPoolExecutor(threads, "hrnet_fast-cpu", initializer=start)
        list(self._executor.map(lambda _: ready.wait(), range(threads)))  # start them all now

    def map(self, calls: Sequence[Callable[[], object]]) -> list:
        """``[call() for call in calls]``, the calls taken in turn by the workers."""
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def in_modes(call: Callable[[], object]):
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return call()

        futures = [self._executor.submit(in_modes, call) for call in calls]
        return [f.result() for f in futures]


@functools.cache
def _workers(threads: int) -> CpuWorkers | None:
    set_threads = _omp_setter()
    return None if set_threads is None else CpuWorkers(threads, set_threads)


def cpu_workers() -> CpuWorkers | None:
    """The process's workers for torch's intra-op thread count (None with a single thread, on one
    of the workers, or without OpenMP)."""
    threads = torch.get_num_threads()
    return _workers(threads) if threads >= 2 else None
