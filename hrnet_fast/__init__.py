"""hrnet_fast: HRNet with its multi-resolution fusion step as fused kernels, official weights unchanged.

from hrnet_fast import HRNet, load_checkpoint
model = HRNet("w32", head="pose")
load_checkpoint(model, "pose_hrnet_w32_256x192.pth")

Every name here is imported on first use (:mod:`._lazy`), so ``import hrnet_fast`` loads no torch.
"""

from ._lazy import lazy_exports

__version__ = "0.1.0"


def _kernels_of_a_checkout() -> None:
    """A source checkout on ``PYTHONPATH``, not installed: its top-level ``kernels/`` becomes
    ``hrnet_fast.kernels``, where an install puts it (setup.py's ``package_dir``)."""
    import importlib.util
    import sys
    from pathlib import Path

    name, folder = f"{__name__}.kernels", Path(__file__).resolve().parent.parent / "kernels"
    if not (folder / "__init__.py").is_file() or importlib.util.find_spec(name) is not None:
        return
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[__name__].kernels = module


_kernels_of_a_checkout()

_EXPORTS = {
    "ARCHS": ".models",
    "HEADS": ".models",
    "CheckpointError": ".models",
    "CheckpointMismatchError": ".models",
    "HRNet": ".models",
    "load_checkpoint": ".models",
    "optimize": ".models",
    "BackendUnavailableError": ".ops",
    "available_backends": ".ops",
    "backend_status": ".ops",
    "get_backend": ".ops",
    "set_backend": ".ops",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(
    __name__, {**_EXPORTS, **{m: f".{m}" for m in ("bench", "models", "nn", "ops", "pose")}}
)
