"""Input validation shared by the ops, run once per call before any backend: clear errors instead of
silently wrong results (or a crashed process) on every backend alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MODES = ("nearest", "bilinear")


def check_mode(mode: str, align_corners: bool) -> None:
    if mode not in MODES:
        raise ValueError(f"upsampling mode must be one of {MODES}, got {mode!r}")
    if not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be a bool, got {type(align_corners).__name__}")
    if mode == "nearest" and align_corners:
        raise ValueError("align_corners=True only applies to mode='bilinear'")


def check_feature_maps(op: str, tensors: Sequence[tuple[str, Tensor]]) -> None:
    """All tensors are 4-D (N, C, H, W) floating tensors with one dtype, one device and one batch,
    each with at least one channel and one pixel (interpolating an empty map is undefined; the
    batch may be empty)."""
    first_name, first = tensors[0]
    for name, t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
        if 0 in t.shape[1:]:
            raise ValueError(f"{op}: {name} is empty (shape {tuple(t.shape)}); channels, height and width must be >= 1")
        if not torch.is_floating_point(t):
            raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
        if t.dtype != first.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but {first_name} is {first.dtype}; cast them to one dtype")
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}")
        if t.shape[0] != first.shape[0]:
            raise ValueError(f"{op}: {name} has batch {t.shape[0]} but {first_name} has batch {first.shape[0]}")
