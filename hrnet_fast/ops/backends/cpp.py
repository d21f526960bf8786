"""The ``cpp`` backend: the C++ extension ``hrnet_fast._C`` (sources in ``csrc/``, built by
``hrnet_fast/_ext.py``), one backend whose CPU kernels (OpenMP) and CUDA kernels are two dispatch keys
of the same custom ops ``hrnet_fast::<op>_cpp``.

The library only registers kernels (``TORCH_LIBRARY_IMPL(hrnet_fast, CPU|CUDA, m)`` in
``csrc/cpu/<op>_kernel.cpp`` and ``csrc/cuda/<op>_binding.cpp``). Probing builds or loads it; then
every registered op with a kernel in the library is defined here from its one schema, with its fake,
autograd and autocast registrations, and serves the device types it has kernels for. A kernel the
library registers for an op no op module defines is an error (the probe says which).
"""

from __future__ import annotations

import functools

import torch

from ..registry import Backend, Kernel, OpLibrary, register_backend

NAMESPACE, SUFFIX = "hrnet_fast", "cpp"
# Every C++ op takes these dtypes on each device (fp32 accumulation; float64 in float64 on the CPU).
DTYPES = {
    "cpu": frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16}),
    "cuda": frozenset({torch.float32, torch.float16, torch.bfloat16}),
}


def _probe() -> str | None:
    from ..._ext import ExtensionBuildError, load  # on first use only: loading it may build it

    try:
        load()
    except ExtensionBuildError as exc:
        return f"the C++ extension is unavailable: {exc}"
    return None


def _device_problem(device_type: str) -> str | None:
    if device_type == "cpu":
        return None
    if device_type != "cuda":
        return f"it has no kernels for {device_type} tensors"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    from ..._ext import load

    loaded = load()
    if loaded.cuda_problem is not None:
        return loaded.cuda_problem
    if not any("cuda" in kernel.dtypes for kernel in _kernels().values()):
        return f"the library {loaded.path} has no CUDA kernels"
    return None


@functools.cache  # the custom ops are defined once per process
def _kernels() -> dict[str, Kernel]:
    library = OpLibrary(NAMESPACE, SUFFIX)
    return {
        op: Kernel(getattr(library, op), {t: DTYPES[t] for t in devices})
        for op, devices in library.define_compiled(tuple(DTYPES)).items()
    }


register_backend(
    Backend(
        "cpp",
        "fused C++ kernels: OpenMP on the CPU, CUDA on GPUs",
        probe=_probe,
        device_problem=_device_problem,
        kernels=_kernels,
        auto_rank={"cpu": 0, "cuda": 1},
    )
)
