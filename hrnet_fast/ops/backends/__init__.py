"""The backends, one module each; importing this package registers every module in it.

A backend module calls :func:`hrnet_fast.ops.registry.register_backend` with its name, probe, the
device types it serves and how to find its kernels per op. Adding a backend means adding a module
here: no other file lists backends.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
