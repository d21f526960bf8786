"""The backend registry: which backends exist, whether each can run here (and why not), and selection.

Backends: ``reference`` (plain PyTorch ops, any device), ``triton`` (CUDA GPUs), ``cuda`` (CUDA C++
extension), ``cpu`` (C++ extension). A call picks one by, in order of precedence: its ``backend=``
argument, :func:`set_backend`, the ``HRNET_FAST_BACKEND`` environment variable, else ``"auto"``,
the fastest backend available for the tensors' device.

Nothing here touches CUDA or compiles anything at import time; availability is probed on first use
and cached.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

ENV_VAR = "HRNET_FAST_BACKEND"
AUTO = "auto"


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here; the message says why."""


@dataclass(frozen=True)
class Backend:
    name: str
    device_types: tuple[str, ...] | Callable[[], tuple[str, ...]] | None  # None: any device
    probe: Callable[[], str | None]  # None when usable, else the reason it is not
    summary: str


def _always() -> str | None:
    return None


def _probe_triton() -> str | None:
    """Usable when triton imports and a CUDA GPU is there, or under TRITON_INTERPRET=1 (CPU, for
    tests). Defines the backend's custom ops (``hrnet_fast::*_triton``) when it is usable."""
    from ..kernels import interpreted

    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton does not import ({exc})"
    if not interpreted() and not torch.cuda.is_available():
        return "no CUDA GPU (TRITON_INTERPRET=1 runs the Triton kernels on the CPU, slowly, for tests)"
    from . import triton_ops  # noqa: F401  (defines the ops)

    return None


def _triton_devices() -> tuple[str, ...]:
    from ..kernels import interpreted

    return ("cuda", "cpu") if interpreted() else ("cuda",)


def _extension_probe(device_type: str) -> Callable[[], str | None]:
    """The C++ extension's kernels for ``device_type``; probing builds or loads it (never at import)."""

    def probe() -> str | None:
        from .. import _ext

        return _ext.unavailable_reason(device_type)

    return probe


_REGISTRY: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("reference", None, _always, "PyTorch ops (the official composition), any device"),
        Backend("triton", _triton_devices, _probe_triton, "fused Triton kernels, CUDA GPUs"),
        Backend("cuda", ("cuda",), _extension_probe("cuda"), "fused CUDA C++ kernels"),
        Backend("cpu", ("cpu",), _extension_probe("cpu"), "fused C++/OpenMP kernels, CPU"),
    )
}

# "auto" tries these in order for a device type; reference runs everywhere and ends each list.
_AUTO_ORDER: dict[str, tuple[str, ...]] = {"cuda": ("triton", "cuda"), "cpu": ("cpu",)}

_selected: str | None = None  # set_backend(); None: fall back to the environment, then auto


def known_backends() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _check_name(name: str, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a backend name (str), got {type(name).__name__}")
    key = name.strip().lower()
    if key != AUTO and key not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r} from {source}; choose one of {AUTO}, {', '.join(_REGISTRY)}")
    return key


@functools.cache
def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` can run on this machine, else a sentence saying why not."""
    try:
        return _REGISTRY[name].probe()
    except Exception as exc:  # a probe that crashes makes its backend unavailable, never the import
        return f"probing it failed: {type(exc).__name__}: {exc}"


def backend_status() -> dict[str, str | None]:
    """Every known backend mapped to None (available) or the reason it is not."""
    return {name: unavailable_reason(name) for name in _REGISTRY}


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Names of the backends that can run here, optionally only those serving ``device``."""
    dtype = None if device is None else torch.device(device).type
    return [
        b.name
        for b in _REGISTRY.values()
        if unavailable_reason(b.name) is None and (dtype is None or _serves(b, dtype))
    ]


def _device_types(backend: Backend) -> tuple[str, ...] | None:
    types = backend.device_types
    return types() if callable(types) else types


def _serves(backend: Backend, device_type: str) -> bool:
    types = _device_types(backend)
    return types is None or device_type in types


def _require_available(name: str) -> None:
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")


def set_backend(name: str | None) -> None:
    """Select the backend for every later call that does not pass ``backend=``.

    ``"auto"`` picks the fastest available backend per device; ``None`` clears the selection, so
    ``$HRNET_FAST_BACKEND`` (or auto) applies again. Raises ``ValueError`` for an unknown name and
    :class:`BackendUnavailableError` (with the reason) for one that cannot run on this machine.
    """
    global _selected
    if name is None:
        _selected = None
        return
    key = _check_name(name, "set_backend()")
    if key != AUTO:
        _require_available(key)
    _selected = key


def get_backend() -> str:
    """The global selection: set_backend()'s, else ``$HRNET_FAST_BACKEND``, else ``"auto"``."""
    if _selected is not None:
        return _selected
    env = os.environ.get(ENV_VAR, "").strip()
    return _check_name(env, f"${ENV_VAR}") if env else AUTO


def validate_backend(name: str | None, source: str = "backend") -> str | None:
    """Check a per-module/per-call choice early: unknown names raise, unavailable ones raise with why."""
    if name is None:
        return None
    key = _check_name(name, source)
    if key != AUTO:
        _require_available(key)
    return key


def exporting() -> bool:
    """True while ONNX export, TorchScript tracing or torch.export records the model: exported
    graphs hold only standard ops, so every op then runs its reference composition."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


@torch.compiler.assume_constant_result
def requested_backend(name: str | None) -> str:
    """What a call asks for: ``name``, else the global selection; ``"reference"`` while exporting."""
    if exporting():
        return "reference"
    return get_backend() if name is None else _check_name(name, "backend=")


@torch.compiler.assume_constant_result
def resolve_backend(name: str | None, device: torch.device) -> str:
    """The backend to run a call on ``device``: explicit ``name``, else the global choice, else auto.

    Under ``torch.compile`` this runs once, at trace time: the graph keeps the backend it was
    traced with (recompile after changing the selection). While exporting it is ``"reference"``.
    """
    key = requested_backend(name)
    if key == AUTO:
        for candidate in _AUTO_ORDER.get(device.type, ()):
            if unavailable_reason(candidate) is None:
                return candidate
        return "reference"
    _require_available(key)
    backend = _REGISTRY[key]
    if not _serves(backend, device.type):
        raise BackendUnavailableError(
            f"backend {key!r} runs on {'/'.join(_device_types(backend) or ())} tensors, "
            f"got tensors on {device}; use backend='auto' or 'reference'"
        )
    return key
