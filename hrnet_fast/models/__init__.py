"""HRNet models: arch table, blocks, backbone, heads and checkpoint loading."""

from . import heads
from .checkpoint import CheckpointError, CheckpointMismatchError, LoadReport, load_checkpoint
from .configs import ARCHS, ArchSpec, StageSpec, get_arch
from .engine import OptimizedHRNet, optimize
from .heads import Head, register_head
from .hrnet import HighResolutionModule, HRNet

HEADS = tuple(heads.HEADS)

__all__ = [
    "ARCHS",
    "HEADS",
    "ArchSpec",
    "CheckpointError",
    "CheckpointMismatchError",
    "HRNet",
    "Head",
    "HighResolutionModule",
    "LoadReport",
    "OptimizedHRNet",
    "StageSpec",
    "get_arch",
    "heads",
    "load_checkpoint",
    "optimize",
    "register_head",
]
