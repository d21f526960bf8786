"""Modules built on the op surface: they decide *what* to compute, the ops decide *how*."""

from .fusion import MultiResolutionFusion

__all__ = ["MultiResolutionFusion"]
