"""Package attributes imported from their submodules on first use (PEP 562), so importing a package
costs nothing until one of its names is used: ``import hrnet_fast`` and the ``hrnet-fast`` command's
parser stay free of torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for ``package`` whose name ``n`` lives in submodule ``exports[n]``.

    ``exports`` maps a public name to the relative module defining it (``{"HRNet": ".models"}``);
    a name mapped to itself with a leading dot (``{"ops": ".ops"}``) is that submodule. The first
    access imports the module and caches the value in the package, so later accesses are plain.
    """

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name], package)
        value = module if exports[name] == f".{name}" else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
