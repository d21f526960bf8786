"""Run HRNet's parallel branches side by side on a CPU, each on its own share of the cores.

Between two fusion steps HRNet's branches are independent chains of residual blocks, and every
branch costs about the same (branch k has 2^k times the channels at 1/4^k the pixels, so the same
FLOPs per 3x3 conv). On a CPU with few cores, a branch per core beats splitting each of the many
small convolutions over all cores: there is no barrier per convolution, the per-call setup of the
library convolutions runs in parallel too, and a core that the machine takes away for a while
delays one branch instead of every convolution.

``BranchPool(threads)`` keeps ``workers`` threads (up to 4, one per branch), each running its
ops with ``threads // workers`` intra-op threads. ``run(calls)`` runs the calls and returns their
results in order; when the calls do not divide evenly among the workers, the first few run first
on the calling thread with all ``threads`` (HRNet's first branch has the most pixels and splits
best), the rest on the workers. Autograd and inference-mode state carry over into the workers.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

MAX_WORKERS = 4  # HRNet has at most four branches


class BranchPool:
    """``run(calls) == [call() for call in calls]``, the calls spread over worker threads."""

    def __init__(self, threads: int):
        if threads < 2:
            raise ValueError(f"a BranchPool needs at least 2 threads, got {threads}")
        self.threads = threads
        self.workers = min(MAX_WORKERS, threads)
        per_worker = threads // self.workers
        self._local = threading.local()
        ready = threading.Barrier(self.workers)

        def start() -> None:
            self._local.worker = True
            torch.set_num_threads(per_worker)  # this thread's own intra-op thread count

        self._executor = ThreadPoolExecutor(self.workers, "hrnet_fast-branch", initializer=start)
        list(self._executor.map(lambda _: ready.wait(), range(self.workers)))  # start them all now
        torch.set_num_threads(threads)  # the workers' setting also became the default: restore it

    def in_worker(self) -> bool:
        return getattr(self._local, "worker", False)

    def run(self, calls: Sequence[Callable[[], object]]) -> list:
        if self.in_worker():  # a branch that itself runs branches: no waiting on our own workers
            return [call() for call in calls]
        first = len(calls) % self.workers if len(calls) > self.workers else 0
        results = [call() for call in calls[:first]]
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        futures = [self._executor.submit(_in_mode, call, grad, inference) for call in calls[first:]]
        return results + [f.result() for f in futures]


def _in_mode(call: Callable[[], object], grad: bool, inference: bool):
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        return call()


@functools.cache
def _pool(threads: int) -> BranchPool:
    return BranchPool(threads)


def branch_pool() -> BranchPool | None:
    """The process's pool for torch's current intra-op thread count (None with a single thread)."""
    threads = torch.get_num_threads()
    return _pool(threads) if threads >= 2 else None
