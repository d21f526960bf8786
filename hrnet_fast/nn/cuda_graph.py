"""Replay CUDA graphs of a module, one captured graph per input signature.

A launch-bound network (HRNet at small batches is one: hundreds of small kernels) spends most of
its time launching; a captured graph launches them all at once. The first call with a new input
shape (or dtype, device, strides) warms the module up on a side stream and captures a graph; later
calls with that signature copy the input into the graph's static buffer and replay it. Outputs are
returned as fresh tensors (a copy of the graph's static outputs), so a later call never overwrites
a result the caller holds. All graphs share one memory pool.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_map


class CudaGraphCache:
    """``cache(x) == fn(x)`` for CUDA inputs, by graph replay; inference only (no autograd).

    The graphs read ``fn``'s parameters where they lay at capture time: call :meth:`clear` after
    moving or re-allocating them (``load_state_dict`` copies in place and needs no clear).
    """

    def __init__(self, fn: Callable[[Tensor], object], warmup: int = 3):
        self.fn = fn
        self.warmup = warmup
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, object]] = {}
        self._pool = None

    def __getstate__(self):
        """Copies and pickles start without graphs (captured graphs cannot be copied; the next call
        with each shape captures again)."""
        return {**self.__dict__, "_graphs": {}, "_pool": None}

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        self._graphs.clear()

    def _capture(self, x: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, object]:
        static_in = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    @torch.no_grad()
    def __call__(self, x: Tensor):
        key = (tuple(x.shape), x.dtype, x.device, x.stride())
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, static_out)
