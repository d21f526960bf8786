"""Semantic segmentation with HRNet: the official Cityscapes test (sliding window, multi-scale, flip),
label maps and overlays, and mIoU evaluation.

from hrnet_fast.seg import SegEstimator, load_seg_model
estimator = SegEstimator(load_seg_model("hrnet_w48_cityscapes_cls19_1024x2048_trainset.pth"))
labels = estimator.predict(image)  # image (3, H, W) uint8 RGB -> train ids (H, W)

Names are imported on first use, so ``hrnet_fast.seg.cli`` (the command's parsers) loads without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CLASS_NAMES": "cityscapes",
    "PALETTE": "cityscapes",
    "label_ids_to_train_ids": "cityscapes",
    "train_ids_to_label_ids": "cityscapes",
    "bit_spread_palette": "draw",
    "default_palette": "draw",
    "label_image": "draw",
    "overlay": "draw",
    "find_pairs": "dataset",
    "read_image": "dataset",
    "read_label": "dataset",
    "SegInputError": "errors",
    "SegEstimator": "estimator",
    "EvalRun": "evaluation",
    "evaluate": "evaluation",
    "ConfusionMatrix": "metrics",
    "SegStats": "metrics",
    "format_stats": "metrics",
    "load_seg_model": "model",
    "CITYSCAPES_CROP": "windows",
    "CITYSCAPES_SCALES": "windows",
    "scaled_size": "windows",
    "crop_windows": "windows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
