"""Optional dependencies (the package's extras): check for one before any work, with the install
command that fits how this copy of hrnet_fast is installed.

From a source checkout (``pip install -e .``, or the folder on ``sys.path``) the command is
``pip install -e ".[plot]"`` in the checkout; from an installed package it is
``pip install "hrnet-fast[plot]"``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


class MissingExtraError(ImportError):
    """An optional dependency a feature needs is not installed; the message says how to install it."""


def source_checkout() -> Path | None:
    """The checkout this package runs from (the folder holding ``pyproject.toml``), or None when installed."""
    root = PACKAGE_ROOT.parent
    return root if (root / "pyproject.toml").is_file() else None


def install_hint(extra: str) -> str:
    """The pip command that adds the extra ``extra`` to this installation of hrnet_fast."""
    root = source_checkout()
    if root is not None:
        return f'pip install -e ".[{extra}]" (in {root})'
    return f'pip install "hrnet-fast[{extra}]"'


def require(module: str, extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` naming ``feature`` and the install command if ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(f"{feature} needs {module}, which is not installed: {install_hint(extra)}")
