"""Activation memory of a training step: what autograd keeps for backward.

On CUDA the measure is the allocator's peak during the step above what was allocated before it. On
a CPU, which keeps no allocator statistics, it is the bytes of the distinct storages autograd saves
for backward during the forward pass (weights included, as on CUDA).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch


class SavedBytes:
    def __init__(self):
        self.storages: dict[tuple, int] = {}

    @property
    def total(self) -> int:
        return sum(self.storages.values())


@contextlib.contextmanager
def saved_tensor_bytes() -> Iterator[SavedBytes]:
    """Count the distinct storages saved for backward by operations run inside the block."""
    counter = SavedBytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        counter.storages[(t.device, storage.data_ptr())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter


def step_memory_bytes(forward: Callable[[], torch.Tensor], device: torch.device) -> int:
    """Activation memory of ``forward().backward()`` on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward().backward()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with saved_tensor_bytes() as saved:
        loss = forward()
    loss.backward()
    return saved.total
