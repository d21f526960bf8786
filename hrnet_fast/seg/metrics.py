"""The confusion matrix of a labelled set and the official statistics computed from it.

``counts[g, p]`` is the number of pixels of ground-truth class g predicted as class p, over every
pixel whose ground truth is not ignored (255). As in HRNet-Semantic-Segmentation (``testval`` in
``lib/core/function.py``), with pos = row sums (ground truth), res = column sums (predictions) and
tp = the diagonal:

    IoU_k          = tp_k / max(1, pos_k + res_k - tp_k)
    mIoU           = mean of IoU_k over all K classes (a class absent from both counts as 0)
    pixel accuracy = sum(tp) / sum(pos)
    mean accuracy  = mean of tp_k / max(1, pos_k)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .cityscapes import IGNORE


@dataclass(frozen=True)
class SegStats:
    """Per-class IoU and accuracy, their means, the pixel accuracy, and per-class pixel counts."""

    iou: list[float]
    accuracy: list[float]
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    ground_truth_pixels: list[int]
    predicted_pixels: list[int]

    @property
    def absent(self) -> list[bool]:
        """Classes neither in the ground truth nor in the predictions (their IoU 0 still counts)."""
        return [g == 0 and p == 0 for g, p in zip(self.ground_truth_pixels, self.predicted_pixels, strict=True)]

    def as_dict(self, class_names: Sequence[str]) -> dict:
        return {
            "mIoU": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "classes": {
                name: {"IoU": iou, "accuracy": acc, "ground_truth_pixels": g, "predicted_pixels": p}
                for name, iou, acc, g, p in zip(
                    class_names, self.iou, self.accuracy, self.ground_truth_pixels, self.predicted_pixels, strict=True
                )
            },
        }


class ConfusionMatrix:
    """A (K, K) int64 confusion matrix kept on ``device``; :meth:`update` with each image's maps."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore: int = IGNORE):
        self.num_classes, self.ignore = num_classes, ignore
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add one image: predicted class ids (H, W) and ground-truth class ids (H, W), ``ignore`` skipped."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and ground truth {tuple(target.shape)} differ")
        k = self.num_classes
        keep = target != self.ignore
        truth = target[keep].to(self.counts.device, torch.int64)
        guess = prediction.to(target.device)[keep].to(self.counts.device, torch.int64)
        if truth.numel() and not (int(truth.min()) >= 0 and int(truth.max()) < k):
            raise ValueError(f"ground truth holds class ids outside 0-{k - 1} (and {self.ignore}, ignored)")
        self.counts += torch.bincount(truth * k + guess, minlength=k * k).view(k, k)

    def stats(self) -> SegStats:
        counts = self.counts.double().cpu()
        tp, pos, res = counts.diag(), counts.sum(1), counts.sum(0)
        iou = tp / (pos + res - tp).clamp(min=1)
        accuracy = tp / pos.clamp(min=1)
        return SegStats(
            iou=iou.tolist(),
            accuracy=accuracy.tolist(),
            miou=float(iou.mean()),
            pixel_accuracy=float(tp.sum() / pos.sum().clamp(min=1)),
            mean_accuracy=float(accuracy.mean()),
            ground_truth_pixels=[int(v) for v in pos.tolist()],
            predicted_pixels=[int(v) for v in res.tolist()],
        )


def format_stats(stats: SegStats, class_names: Sequence[str]) -> str:
    """A per-class table (IoU, accuracy) and the summary lines, in percent."""
    width = max(len(n) for n in [*class_names, "pixel accuracy"])
    lines = [f"{'class':<{width}}   IoU %  acc %"]
    for name, iou, acc, absent in zip(class_names, stats.iou, stats.accuracy, stats.absent, strict=True):
        note = "  (no pixels)" if absent else ""
        lines.append(f"{name:<{width}}  {100 * iou:6.2f} {100 * acc:6.2f}{note}")
    lines.append(f"{'mIoU':<{width}}  {100 * stats.miou:6.2f}")
    lines.append(f"{'pixel accuracy':<{width}}  {100 * stats.pixel_accuracy:6.2f}")
    lines.append(f"{'mean accuracy':<{width}}  {100 * stats.mean_accuracy:6.2f}")
    return "\n".join(lines)
