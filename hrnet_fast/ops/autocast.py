"""Mixed precision: the fusion ops follow ``aten::add``'s rule under ``torch.autocast``.

Autocast leaves additions alone, so in the reference composition a sum of float16 and float32
maps comes out in the promoted dtype (float32). The ops do the same: under autocast, inputs of
mixed floating dtypes are cast to their promoted dtype before the kernel runs; outside autocast
mixed dtypes are an error (they usually are a bug). :func:`register_autocast` installs that rule
as the autocast kernel of a backend's custom op, so calling the op directly behaves alike.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

_AUTOCAST_KEYS = {"cpu": torch._C.DispatchKey.AutocastCPU, "cuda": torch._C.DispatchKey.AutocastCUDA}
_LIBRARIES: list[torch.library.Library] = []  # keep registrations alive


def promote(tensors: list[Tensor]) -> list[Tensor]:
    """Cast to the promoted floating dtype when autocast is on for their device and dtypes differ."""
    if len({t.dtype for t in tensors}) < 2 or not all(t.is_floating_point() for t in tensors):
        return tensors
    if not torch.is_autocast_enabled(tensors[0].device.type):
        return tensors
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    return [t.to(dtype) for t in tensors]


def _promote_args(args: tuple) -> tuple:
    flat = [a for arg in args for a in (arg if isinstance(arg, list | tuple) else [arg]) if isinstance(a, Tensor)]
    cast = iter(promote(flat))
    out = []
    for arg in args:
        if isinstance(arg, list | tuple):
            out.append([next(cast) if isinstance(a, Tensor) else a for a in arg])
        else:
            out.append(next(cast) if isinstance(arg, Tensor) else arg)
    return tuple(out)


def register_autocast(qualname: str) -> None:
    """Give custom op ``qualname`` autocast kernels (CPU and CUDA) that apply :func:`promote`."""
    namespace, name = qualname.split("::")
    op = getattr(getattr(torch.ops, namespace), name).default
    lib = torch.library.Library(namespace, "IMPL")
    for device_type, key in _AUTOCAST_KEYS.items():

        def kernel(*args, _key=key, _device_type=device_type):
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_key)):
                return op(*_promote_args(args))

        lib.impl(name, kernel, key.name)
    _LIBRARIES.append(lib)
