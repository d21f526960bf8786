"""The op surface: one function per op; each validates its inputs and runs the kernel the registry
gives it for the chosen backend.

``<op>_op.py`` holds an op's math, schema, reference, fake and autograd (its kernels carry the op's
name: ``kernels/<op>.py``, ``csrc/*/<op>_kernel.*``); ``registry.py`` knows the ops and backends and
selects; ``backends/`` has one module per backend. Importing this package registers every op module
(``*_op.py``) and every backend, so backends see every op however it is reached.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from . import backends as _backends  # noqa: F401  (registers every backend)
from .conv_act import conv_bias_act, conv_bias_act_reference
from .fusion_branch_op import fusion_branch, fusion_branch_reference
from .registry import (
    BackendUnavailableError,
    available_backends,
    backend_status,
    get_backend,
    known_backends,
    requested_backend,
    resolve_backend,
    set_backend,
)
from .upsample_concat_op import upsample_concat, upsample_concat_reference
from .upsample_sum_op import upsample_sum, upsample_sum_reference
from .winograd_conv_op import winograd_conv, winograd_conv_reference, winograd_panel

for _module in _pkgutil.iter_modules(__path__):
    if _module.name.endswith("_op"):
        _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "backend_status",
    "conv_bias_act",
    "conv_bias_act_reference",
    "fusion_branch",
    "fusion_branch_reference",
    "get_backend",
    "known_backends",
    "requested_backend",
    "resolve_backend",
    "set_backend",
    "upsample_concat",
    "upsample_concat_reference",
    "upsample_sum",
    "upsample_sum_reference",
    "winograd_conv",
    "winograd_conv_reference",
    "winograd_panel",
]
