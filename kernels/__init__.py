"""Triton kernels of hrnet_fast, installed as ``hrnet_fast.kernels``: one module per op family.

``kernels/<op>.py`` holds the ``@triton.jit`` kernels of op ``<op>`` (and of its backward), their
``launch_*`` functions, and host functions named after the ops that take the ops' arguments
(schemas in ``hrnet_fast/ops/<op>_op.py``); the triton backend (``hrnet_fast/ops/backends/triton.py``)
finds them by those names. Kernels know tensors and pointers, never modules. This file imports no
triton: the kernel modules do, and the backend imports them on first use.
"""

from __future__ import annotations

import os


def interpreted() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``), as Triton reads it."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")
