"""The op surface: one function per op; each validates its inputs and dispatches to a backend.

This package is the only place that knows which backends exist (see :mod:`.backends`).
"""

from .backends import (
    BackendUnavailableError,
    available_backends,
    backend_status,
    get_backend,
    known_backends,
    requested_backend,
    resolve_backend,
    set_backend,
)
from .conv_act import conv_bias_act, conv_bias_act_reference
from .upsample_concat import upsample_concat, upsample_concat_reference
from .upsample_sum import upsample_sum, upsample_sum_reference

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "backend_status",
    "conv_bias_act",
    "conv_bias_act_reference",
    "get_backend",
    "known_backends",
    "requested_backend",
    "resolve_backend",
    "set_backend",
    "upsample_concat",
    "upsample_concat_reference",
    "upsample_sum",
    "upsample_sum_reference",
]
