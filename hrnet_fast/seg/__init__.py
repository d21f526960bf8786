"""Semantic segmentation with HRNet: the official Cityscapes test (sliding window, multi-scale, flip),
label maps and overlays, and mIoU evaluation.

from hrnet_fast.seg import SegEstimator, load_seg_model
estimator = SegEstimator(load_seg_model("hrnet_w48_cityscapes_cls19_1024x2048_trainset.pth"))
labels = estimator.predict(image)  # image (3, H, W) uint8 RGB -> train ids (H, W)

Every name here is imported on first use (:mod:`hrnet_fast._lazy`): the command line's parser
imports this package without loading torch.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "CLASS_NAMES": ".cityscapes",
    "PALETTE": ".cityscapes",
    "label_ids_to_train_ids": ".cityscapes",
    "train_ids_to_label_ids": ".cityscapes",
    "find_pairs": ".dataset",
    "read_image": ".dataset",
    "read_label": ".dataset",
    "bit_spread_palette": ".draw",
    "default_palette": ".draw",
    "label_image": ".draw",
    "overlay": ".draw",
    "SegInputError": ".errors",
    "SegEstimator": ".estimator",
    "EvalRun": ".evaluation",
    "evaluate": ".evaluation",
    "ConfusionMatrix": ".metrics",
    "SegStats": ".metrics",
    "format_stats": ".metrics",
    "load_seg_model": ".model",
    "CITYSCAPES_CROP": ".windows",
    "CITYSCAPES_SCALES": ".windows",
    "crop_windows": ".windows",
    "scaled_size": ".windows",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
