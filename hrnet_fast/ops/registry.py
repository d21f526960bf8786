"""The registry of ops x backends, and backend selection.

Ops register an :class:`OpSpec` (name, schema, reference composition, fake implementation, autograd
formula) from their op module (``ops/<op>_op.py``). Backends register a :class:`Backend` from their
own module (``ops/backends/<name>.py``): a probe that says why it cannot run (or None), the device
types it serves, its rank for ``auto``, and, once the probe succeeded, a table of kernels per op.
Op modules ask :func:`kernel` for the function to run and never name a backend.

A call's backend is, in order of precedence: the ``backend=`` argument of the op or module,
:func:`set_backend`, the ``HRNET_FAST_BACKEND`` environment variable, else ``"auto"``: the
best-ranked available backend for the tensors' device, else ``reference``. While a model is being
exported (ONNX, TorchScript tracing, ``torch.export``) every op runs its reference composition.

Custom ops: every backend that registers compiled or launched kernels exposes them as
``torch.ops.<namespace>.<op>_<backend>`` (e.g. ``hrnet_fast::upsample_sum_cpp``), defined by
:class:`OpLibrary` from the op's one schema, with the op's fake implementation, autograd formula and
autocast rule attached, so ``torch.compile(fullgraph=True)`` traces through them and
``torch.library.opcheck`` passes.

Nothing here touches CUDA or compiles anything at import time; probes run on first use, once.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .autocast import register_autocast

log = logging.getLogger(__name__)

ENV_VAR = "HRNET_FAST_BACKEND"
AUTO = "auto"
REFERENCE = "reference"


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here (or not on these tensors); the message says why."""


# ---------------------------------------------------------------------------------------------- ops


@dataclass(frozen=True)
class Autograd:
    """An op's derivative for its custom ops: ``backward(ops, ctx, *grads)`` returns the gradients of
    the inputs, where ``ops`` holds the same backend's custom ops (so a backward can call, say,
    ``ops.upsample_sum_backward``); ``setup_context(ctx, inputs, output)`` saves what it needs."""

    backward: Callable
    setup_context: Callable | None = None


@dataclass(frozen=True)
class OpSpec:
    """One op: its schema (declared here once, for every backend), its reference composition (the
    oracle and the fallback; same arguments as the schema), its fake (meta) implementation and its
    autograd formula. ``family`` names the files of its kernels (``kernels/<family>.py``,
    ``csrc/*/<family>_kernel.*``): the forward op's name, which a backward op shares."""

    name: str
    schema: str
    reference: Callable
    fake: Callable
    autograd: Autograd
    autocast: bool = False  # mixed floating inputs promote under torch.autocast, as for aten::add
    family: str = ""

    def __post_init__(self):
        if not self.family:
            object.__setattr__(self, "family", self.name)


_OPS: dict[str, OpSpec] = {}


def define_op(spec: OpSpec) -> OpSpec:
    """Register an op (from its op module, at import)."""
    if spec.name in _OPS:
        raise ValueError(f"op {spec.name!r} is defined twice")
    _OPS[spec.name] = spec
    return spec


def op_specs() -> Mapping[str, OpSpec]:
    """Every registered op by name."""
    return dict(_OPS)


class OpLibrary:
    """The custom ops of one backend: ``<namespace>::<op>_<suffix>`` for each op it implements.

    :meth:`define` declares an op with its registered schema and attaches the op's fake
    implementation, autograd formula (bound to this library, so a backward calls this backend's
    ops) and autocast rule; ``impls`` gives Python implementations per dispatch key, or none when a
    compiled library registers the kernels (C++ ``TORCH_LIBRARY_IMPL``). ``library.<op>`` is the
    op's ``torch.ops`` packet.
    """

    def __init__(self, namespace: str, suffix: str):
        self.namespace, self.suffix = namespace, suffix
        self._fragment = torch.library.Library(namespace, "FRAGMENT")

    def qualname(self, op: str) -> str:
        return f"{self.namespace}::{op}_{self.suffix}"

    def __getattr__(self, op: str):
        if op.startswith("_"):
            raise AttributeError(op)
        return getattr(getattr(torch.ops, self.namespace), f"{op}_{self.suffix}")

    def _has_kernel(self, op: str, device_type: str) -> bool:
        """Whether a kernel for ``op`` is registered for ``device_type`` (its op defined or not yet)."""
        try:
            return torch._C._dispatch_has_kernel_for_dispatch_key(self.qualname(op), device_type.upper())
        except RuntimeError:  # no such operator at all
            return False

    def define_compiled(self, device_types: Sequence[str] = ("cpu", "cuda")) -> dict[str, list[str]]:
        """Define every registered op for which a loaded C++ library registered kernels in this
        namespace (``TORCH_LIBRARY_IMPL``); returns the device types each has kernels for. Raises
        when the library registered kernels for an op that no op module defines."""
        found = {}
        for op in _OPS:
            devices = [t for t in device_types if self._has_kernel(op, t)]
            if devices:
                self.define(op)
                found[op] = devices
        listing = "\n".join(torch._C._dispatch_find_dangling_impls())
        prefix, suffix = f"{self.namespace}::", f"_{self.suffix}"
        dangling = [n for n in re.findall(r"name: (\S+)\nschema: \(none\)", listing) if n.startswith(prefix)]
        dangling = [n for n in dangling if n.endswith(suffix)]
        if dangling:
            raise RuntimeError(f"the library registers kernels for ops no op module defines: {', '.join(dangling)}")
        return found

    def define(self, op: str, impls: Mapping[str, Callable] | None = None) -> None:
        spec = _OPS[op]
        name = f"{op}_{self.suffix}"
        self._fragment.define(name + spec.schema)
        for dispatch_key, fn in (impls or {}).items():
            self._fragment.impl(name, fn, dispatch_key)
        qualname = self.qualname(op)
        torch.library.register_fake(qualname)(spec.fake)
        torch.library.register_autograd(
            qualname, functools.partial(spec.autograd.backward, self), setup_context=spec.autograd.setup_context
        )
        if spec.autocast:
            register_autocast(qualname)


# ----------------------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Kernel:
    """A backend's implementation of one op: ``fn`` takes the op's schema arguments; ``dtypes`` maps
    each device type it runs on to the dtypes it takes (None: any device, any dtype)."""

    fn: Callable
    dtypes: Mapping[str, frozenset[torch.dtype]] | None


@dataclass(frozen=True)
class Backend:
    """One implementation of the ops.

    ``probe()`` is None when the backend can run on this machine, else the reason (it may build or
    load things: it runs once, on first use). ``device_problem(device_type)`` is None when it
    serves tensors of that device type, else why not. ``kernels()`` (asked once, after a successful
    probe) maps op names to :class:`Kernel`; ops it lacks run their reference composition.
    ``auto_rank`` orders the backends ``auto`` tries per device type (lower first; absent: never).
    """

    name: str
    summary: str
    probe: Callable[[], str | None]
    device_problem: Callable[[str], str | None]
    kernels: Callable[[], Mapping[str, Kernel]]
    auto_rank: Mapping[str, int] = field(default_factory=dict)


_BACKENDS: dict[str, Backend] = {}
_KERNELS: dict[str, Mapping[str, Kernel]] = {}  # per backend, filled after its probe succeeded
_selected: str | None = None  # set_backend(); None: the environment, then auto


def register_backend(backend: Backend) -> Backend:
    """Register a backend (from its module in ``ops/backends/``, at import)."""
    if backend.name in _BACKENDS or backend.name == AUTO:
        raise ValueError(f"backend name {backend.name!r} is taken")
    _BACKENDS[backend.name] = backend
    _AUTO_CHOICE.clear()
    return backend


def known_backends() -> tuple[str, ...]:
    """Every registered backend's name, reference first."""
    return tuple(sorted(_BACKENDS, key=lambda name: name != REFERENCE))


def _check_name(name: str, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a backend name (str), got {type(name).__name__}")
    key = name.strip().lower()
    if key != AUTO and key not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r} from {source}; choose one of {AUTO}, {', '.join(known_backends())}")
    return key


# One probe at a time: a model's first call may come from several threads at once (optimize()'s CPU
# workers), and a probe defines the backend's custom ops, which must happen once.
_PROBING = threading.RLock()
_REASONS: dict[str, str | None] = {}  # per probed backend: None (available) or why not
_AUTO_CHOICE: dict[str, str] = {}  # per device type, what auto picks (from the probes: cleared with them)


def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` can run on this machine, else a sentence saying why not (probed
    once per process)."""
    if name in _REASONS:
        return _REASONS[name]
    if torch.compiler.is_compiling():  # tracing runs on one thread, and cannot enter a lock
        return _probe(name)
    with _PROBING:
        if name not in _REASONS:
            _REASONS[name] = _probe(name)
        return _REASONS[name]


def clear_probes() -> None:
    """Forget every probe's result, so the next use probes afresh (for tests that change a backend)."""
    with _PROBING:
        _REASONS.clear()
        _AUTO_CHOICE.clear()


def _probe(name: str) -> str | None:
    backend = _BACKENDS[name]
    try:
        reason = backend.probe()
        if reason is None:
            _KERNELS[name] = dict(backend.kernels())
    except Exception as exc:  # a probe that crashes makes its backend unavailable, never the import
        reason = f"probing it failed: {type(exc).__name__}: {exc}"
    return reason


def backend_status() -> dict[str, str | None]:
    """Every known backend mapped to None (available) or the reason it is not."""
    return {name: unavailable_reason(name) for name in known_backends()}


def _device_problem(name: str, device_type: str) -> str | None:
    return unavailable_reason(name) or _BACKENDS[name].device_problem(device_type)


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Names of the backends that can run here, optionally only those serving ``device``."""
    if device is None:
        return [name for name in known_backends() if unavailable_reason(name) is None]
    device_type = torch.device(device).type
    return [name for name in known_backends() if _device_problem(name, device_type) is None]


def _require_available(name: str) -> None:
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")


def validate_backend(name: str | None, source: str = "backend") -> str | None:
    """Check a per-module/per-call choice early: unknown names raise, unavailable ones raise with why."""
    if name is None:
        return None
    key = _check_name(name, source)
    if key != AUTO:
        _require_available(key)
    return key


def set_backend(name: str | None) -> None:
    """Select the backend for every later call that does not pass ``backend=``.

    ``"auto"`` picks the best available backend per device; ``None`` clears the selection, so
    ``$HRNET_FAST_BACKEND`` (or auto) applies again. Raises ``ValueError`` for an unknown name and
    :class:`BackendUnavailableError` (with the reason) for one that cannot run on this machine.
    """
    global _selected
    _selected = validate_backend(name, "set_backend()")


_ENV_KEYS: dict[str, str] = {}  # each $HRNET_FAST_BACKEND value seen that names a backend -> its key


def get_backend() -> str:
    """The global selection: set_backend()'s, else ``$HRNET_FAST_BACKEND``, else ``"auto"``.

    The environment is read on every call (a change applies to the next call); each value is checked
    once."""
    if _selected is not None:
        return _selected
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return AUTO
    key = _ENV_KEYS.get(raw)
    if key is None:
        env = raw.strip()
        key = _ENV_KEYS[raw] = _check_name(env, f"${ENV_VAR}") if env else AUTO  # unknown names raise
    return key


# torch.onnx.is_in_onnx_export() imports two modules on every call, which was most of what choosing
# an op call's backend cost (once per convolution of a forward). Where that function reads exactly
# these names (checked once, at import), exporting() reads its two flags directly; with any other
# torch it keeps calling the function.
_ONNX_CHECK_NAMES = (
    "torch.onnx._internal.exporter",
    "_flags",
    "torch.onnx._internal.torchscript_exporter._globals",
    "GLOBALS",
    "in_onnx_export",
    "_is_onnx_exporting",
)


def _onnx_export_check() -> Callable[[], bool]:
    public = torch.onnx.is_in_onnx_export
    if getattr(getattr(public, "__code__", None), "co_names", None) != _ONNX_CHECK_NAMES:
        return public
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:
        return public
    return lambda: GLOBALS.in_onnx_export or _flags._is_onnx_exporting


_in_onnx_export = _onnx_export_check()


def exporting() -> bool:
    """True while ONNX export, TorchScript tracing or torch.export records the model: exported
    graphs hold only standard ops, so every op then runs its reference composition."""
    return _in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


@torch.compiler.assume_constant_result
def requested_backend(name: str | None) -> str:
    """What a call asks for: ``name``, else the global selection; ``"reference"`` while exporting."""
    if exporting():
        return REFERENCE
    return get_backend() if name is None else _check_name(name, "backend=")


@torch.compiler.assume_constant_result
def resolve_backend(name: str | None, device: torch.device) -> str:
    """The backend that runs a call on ``device``: ``name``, else the global choice, else auto.

    Raises :class:`BackendUnavailableError` when the chosen backend cannot run here or does not
    serve ``device``. Under ``torch.compile`` this runs once, at trace time: the graph keeps the
    backend it was traced with (recompile after changing the selection).
    """
    key = requested_backend(name)
    if key == AUTO:
        choice = _AUTO_CHOICE.get(device.type)
        if choice is None:
            ranked = sorted(
                (b for b in _BACKENDS.values() if device.type in b.auto_rank), key=lambda b: b.auto_rank[device.type]
            )
            choice = next((b.name for b in ranked if _device_problem(b.name, device.type) is None), REFERENCE)
            _AUTO_CHOICE[device.type] = choice
        return choice
    _require_available(key)
    problem = _BACKENDS[key].device_problem(device.type)
    if problem is not None:
        raise BackendUnavailableError(
            f"backend {key!r} does not run on {device.type} tensors here ({problem}); use backend='auto' or 'reference'"
        )
    return key


def unsupported_reason(op: str, backend: str, like: Tensor) -> str | None:
    """None when ``backend`` (resolved, see :func:`resolve_backend`) has a fused kernel of ``op`` for
    tensors like ``like`` (device type and dtype), else why not: the one question a module asks
    before choosing what to compute."""
    reason = unavailable_reason(backend)
    if reason is not None:
        return f"backend {backend!r} is not available: {reason}"
    kernel = _KERNELS[backend].get(op)
    if kernel is None:
        return f"backend {backend!r} has no {op} kernel"
    if kernel.dtypes is None:
        return None
    dtypes = kernel.dtypes.get(like.device.type)
    if dtypes is None:
        return f"backend {backend!r} runs {op} on {'/'.join(kernel.dtypes)} tensors, not {like.device.type}"
    if like.dtype not in dtypes:
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        return f"backend {backend!r} runs {op} for {names}, not {like.dtype}"
    return None


def fused_kernel(op: str, backend: str, like: Tensor) -> Callable | None:
    """``backend``'s (resolved) kernel of ``op`` for tensors like ``like``, or None where
    :func:`unsupported_reason` says it has none: for callers that choose another path themselves."""
    return _KERNELS[backend][op].fn if unsupported_reason(op, backend, like) is None else None


def kernel(op: str, backend: str, like: Tensor) -> Callable:
    """The function that runs ``op`` on ``backend`` (resolved) for tensors like ``like``: the
    backend's kernel, or the op's reference composition where it has none (with a debug line; the
    reference backend has no kernels at all)."""
    reason = unsupported_reason(op, backend, like)
    if reason is None:
        return _KERNELS[backend][op].fn
    if not torch.compiler.is_compiling():
        log.debug("%s: %s; running the reference composition", op, reason)
    return _OPS[op].reference
