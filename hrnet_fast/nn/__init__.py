"""Modules built on the op surface: they decide *what* to compute, the ops decide *how*."""

from .cuda_graph import CudaGraphCache
from .folded import FoldedConv, fold_conv_bn
from .fusion import MultiResolutionFusion
from .op_plan import OpPlans

__all__ = ["CudaGraphCache", "FoldedConv", "MultiResolutionFusion", "OpPlans", "fold_conv_bn"]
