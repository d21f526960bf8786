"""``VersionSum(tensors)()``: the sum of the tensors' version counters, which grows with every in-place
change to any of them (counters never go down).

Summed in C++ (``csrc/runtime/version_sum.cpp``) where ``hrnet_fast._C`` is loaded already: right
after a forward, reading ~600 parameters' counters from Python chases cold pointers for about a
quarter of a millisecond (one-off measurement on the 2-core AMD EPYC CI machine, batch-1 W32
forward), which a CPU engine would pay on every call. Elsewhere the same sum in Python.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class VersionSum:
    """Callable: the current sum of the version counters of ``tensors`` (inference tensors, which
    have none and cannot change in place outside inference mode, are left out)."""

    def __init__(self, tensors: Iterable[Tensor]):
        self.tensors = [t for t in tensors if not t.is_inference()]
        self._native = None

    def __getstate__(self):
        """Copies and pickles make their C++ counterpart again (it refers to these tensors' counters)."""
        return {**self.__dict__, "_native": None}

    def __call__(self) -> int:
        if self._native is None:
            from .._ext import loaded_library

            if loaded_library() is None:
                return sum(t._version for t in self.tensors)
            self._native = torch.classes.hrnet_fast.VersionSum(self.tensors)
        return self._native.sum()
