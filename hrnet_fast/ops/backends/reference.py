"""The ``reference`` backend: no kernels of its own, so every op runs its PyTorch composition (the
official repos' code path) on any device and dtype. It is the oracle of the tests, what every other
backend falls back to for what it lacks, and what every op runs while a model is exported."""

from __future__ import annotations

from ..registry import REFERENCE, Backend, register_backend

register_backend(
    Backend(
        REFERENCE,
        "PyTorch ops (the official composition), any device",
        probe=lambda: None,
        device_problem=lambda device_type: None,
        kernels=dict,
    )
)
