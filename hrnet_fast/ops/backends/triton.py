"""The ``triton`` backend: the Triton kernels of ``kernels/`` (installed as ``hrnet_fast.kernels``).

Usable when triton imports and a CUDA GPU is there, or under ``TRITON_INTERPRET=1`` (then it also
serves CPU tensors, slowly: that is how CI tests the kernels; ``auto`` never picks it for CPU
tensors). Its kernels are found by name: op ``<op>`` of family ``<family>`` runs the function
``<op>`` of module ``hrnet_fast.kernels.<family>``, which takes the op's schema arguments. Each
becomes the custom op ``hrnet_fast::<op>_triton`` (CUDA dispatch key; also CPU when interpreted)
with the op's fake, autograd and autocast registrations. float64 is not covered: it runs the
reference composition.

Why not ``torch.library.triton_op``: it would let Inductor see the launches inside the op (and let
AOTInductor package them), but its traced fake implementation fails on CPU under the interpreter
(so CI could not run ``torch.compile`` or ``opcheck`` on it) and it would bypass the op modules'
fake and autograd formulas, which every backend shares. Inductor cannot fuse other work into these
kernels either way, and the per-call cost of an opaque custom op disappears under CUDA graphs.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util

import torch

from ...extras import install_hint
from ...kernels import interpreted
from ..registry import Backend, Kernel, OpLibrary, OpSpec, op_specs, register_backend

DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32})


def _probe() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return (
            f"triton does not import ({exc}); install it with {install_hint('triton')}, or pip install triton "
            "(CUDA builds of torch on Linux bring it)"
        )
    if not interpreted() and not torch.cuda.is_available():
        return "no CUDA GPU (TRITON_INTERPRET=1 runs the Triton kernels on the CPU, slowly, for tests)"
    return None


def _device_types() -> tuple[str, ...]:
    return ("cuda", "cpu") if interpreted() else ("cuda",)


def _device_problem(device_type: str) -> str | None:
    if device_type in _device_types():
        return None
    return "its kernels run on CUDA GPUs (on the CPU only under TRITON_INTERPRET=1, for tests)"


def _launcher(spec: OpSpec):
    """The host function of ``spec`` in ``hrnet_fast.kernels.<family>``, or None when there is none."""
    module_name = f"{interpreted.__module__}.{spec.family}"  # hrnet_fast.kernels.<family>
    if importlib.util.find_spec(module_name) is None:
        return None
    return getattr(importlib.import_module(module_name), spec.name, None)


@functools.cache  # the custom ops are defined once per process
def _kernels() -> dict[str, Kernel]:
    library = OpLibrary("hrnet_fast", "triton")
    dispatch_keys = [t.upper() for t in _device_types()]
    table = {}
    for spec in op_specs().values():
        launcher = _launcher(spec)
        if launcher is not None:
            library.define(spec.name, dict.fromkeys(dispatch_keys, launcher))
            table[spec.name] = Kernel(getattr(library, spec.name), dict.fromkeys(_device_types(), DTYPES))
    return table


register_backend(
    Backend(
        "triton",
        "fused Triton kernels, CUDA GPUs",
        probe=_probe,
        device_problem=_device_problem,
        kernels=_kernels,
        auto_rank={"cuda": 0},
    )
)
