"""HRNet models: arch table, blocks, backbone, heads and checkpoint loading."""

from . import heads
from .checkpoint import CheckpointError, CheckpointMismatchError, LoadReport, load_checkpoint
from .configs import ARCHS, ArchSpec, StageSpec, get_arch
from .heads import ClsHRNet, FeaturesHRNet, PoseHRNet, SegHRNet, V2pHRNet
from .hrnet import HighResolutionModule, HRNet
from .optimize import OptimizedHRNet, optimize

HEADS = tuple(HRNet.heads)

__all__ = [
    "ARCHS",
    "HEADS",
    "ArchSpec",
    "CheckpointError",
    "CheckpointMismatchError",
    "ClsHRNet",
    "FeaturesHRNet",
    "HRNet",
    "HighResolutionModule",
    "LoadReport",
    "OptimizedHRNet",
    "PoseHRNet",
    "SegHRNet",
    "StageSpec",
    "V2pHRNet",
    "get_arch",
    "heads",
    "load_checkpoint",
    "optimize",
]
