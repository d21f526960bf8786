"""Shared fixtures: every test starts from the default backend selection; `cuda` tests skip without a GPU.

Without a GPU the Triton kernels run in Triton's CPU interpreter: TRITON_INTERPRET=1 is set here,
before any kernel is defined, unless the environment already says otherwise.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import hrnet_fast
from hrnet_fast.ops import registry


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _default_backend(monkeypatch):
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    hrnet_fast.set_backend(None)
    yield
    hrnet_fast.set_backend(None)


@pytest.fixture
def poisoned_outputs():
    """Every tensor torch allocates uninitialised (the ops' outputs too) starts as NaN, so an element a
    kernel forgets to write shows (``pytestmark = pytest.mark.usefixtures("poisoned_outputs")``)."""
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(was, warn_only=warn_only)
