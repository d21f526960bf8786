"""hrnet_fast: HRNet with its multi-resolution fusion step as fused kernels, official weights unchanged.

from hrnet_fast import HRNet, load_checkpoint
model = HRNet("w32", head="pose")
load_checkpoint(model, "pose_hrnet_w32_256x192.pth")
"""

from .models import ARCHS, HEADS, CheckpointError, CheckpointMismatchError, HRNet, load_checkpoint, optimize
from .ops import BackendUnavailableError, available_backends, backend_status, get_backend, set_backend

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "HEADS",
    "BackendUnavailableError",
    "CheckpointError",
    "CheckpointMismatchError",
    "HRNet",
    "available_backends",
    "backend_status",
    "get_backend",
    "load_checkpoint",
    "optimize",
    "set_backend",
]
