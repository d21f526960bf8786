"""Worker threads that run an inference forward on a CPU with one intra-op thread each.

Splitting each of HRNet's hundreds of small convolutions over all cores (torch's OpenMP threads)
puts a barrier after every op: when the machine is shared and the OS takes a core away for a
moment, every barrier waits for it, and a forward slows down several times. Here each op runs on
one core, and the cores share *independent* work instead: the images of a batch, HRNet's branches
between two fusion steps (equal FLOPs per branch), the outputs of a fusion step. Such calls are
tasks that the threads take in turn, so a core that stalls hands its share to the others.

``workers = cpu_workers()`` (None with one intra-op thread, or where torch's threads are not
OpenMP's) has one thread per intra-op thread torch was given, each running its ops single-threaded.
``workers.call(fn)`` runs ``fn`` on a worker; inside it, ``workers.run(calls)`` gives
``[call() for call in calls]``, the calls taken in turn by the calling worker and any idle ones,
and ``workers.alone(fn)`` runs ``fn`` with all the pool's threads splitting each op when nothing
else runs (the first layers of a single image have nothing independent beside them). Autograd and
inference-mode state carry over into every task. :func:`current_workers` is the pool when called
from one of its threads, else None. Thread counts are set per thread through OpenMP (torch's
process-wide default stays as it is).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

_local = threading.local()


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
        self._set_threads = set_threads
        self._busy = 0  # workers running a task
        self._lock = threading.Lock()
        ready = threading.Barrier(threads)

        def start() -> None:
            _local.workers = self
            torch.get_num_threads()  # torch sets a new thread's OpenMP team size on its first use: now
            set_threads(1)

        self._executor = ThreadPoolExecutor(threads, "hrnet_fast-cpu", initializer=start)
        list(self._executor.map(lambda _: ready.wait(), range(threads)))  # start them all now

    def call(self, fn: Callable[[], object]):
        """``fn()`` on a worker thread (directly when already on one)."""
        if current_workers() is self:
            return fn()
        return self._executor.submit(self._task(fn)).result()

    def alone(self, fn: Callable[[], object]):
        """``fn()``, with every thread of the pool splitting its ops when it is not one of several
        calls of a :meth:`run` and no other worker is busy."""
        if current_workers() is not self or getattr(_local, "sharing", False) or self._busy > 1:
            return fn()
        self._set_threads(self.size)
        try:
            return fn()
        finally:
            self._set_threads(1)

    def _task(self, fn: Callable[[], object]) -> Callable[[], object]:
        """``fn`` as a worker task: counted as busy, in the submitting thread's autograd modes."""
        fn = _with_modes(fn)

        def task():
            with self._lock:
                self._busy += 1
            try:
                return fn()
            finally:
                with self._lock:
                    self._busy -= 1

        return task

    def run(self, calls: Sequence[Callable[[], object]]) -> list:
        """``[call() for call in calls]``: the calling thread and idle workers take the calls in turn."""
        results: list = [None] * len(calls)
        order = itertools.count()  # next() on it is atomic under the GIL

        def drain() -> None:
            sharing, _local.sharing = getattr(_local, "sharing", False), len(calls) > 1
            try:
                while (i := next(order)) < len(calls):
                    results[i] = calls[i]()
            finally:
                _local.sharing = sharing

        helpers = [self._executor.submit(self._task(drain)) for _ in range(min(len(calls), self.size) - 1)]
        try:
            drain()
        finally:
            for helper in helpers:
                if not helper.cancel():  # one that has not started (all workers busy) is not waited for
                    helper.result()
        return results


def _with_modes(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` bound to the calling thread's autograd and inference-mode state."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def call():
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn()

    return call


@functools.cache
def _workers(threads: int) -> CpuWorkers | None:
    set_threads = _omp_setter()
    return None if set_threads is None else CpuWorkers(threads, set_threads)


def cpu_workers() -> CpuWorkers | None:
    """The process's workers for torch's intra-op thread count (None with a single thread, or
    without OpenMP)."""
    if current_workers() is not None:
        return current_workers()
    threads = torch.get_num_threads()
    return _workers(threads) if threads >= 2 else None


def current_workers() -> CpuWorkers | None:
    """The pool whose thread this is, else None."""
    return getattr(_local, "workers", None)
