"""Semantic segmentation of whole images with a seg model, as the official Cityscapes test does it.

For each image (3, H, W) uint8 RGB and each test scale s (HRNet-Semantic-Segmentation, ``tools/test.py``
with ``Cityscapes.multi_scale_inference``):

1. normalize: x = (image / 255 - mean) / std with ImageNet's RGB statistics (the official code reads
   BGR with OpenCV and flips to RGB first), then resize bilinearly (half-pixel centres, as OpenCV's
   ``INTER_LINEAR``) to the scale's size (:func:`.windows.scaled_size`);
2. cover the resized image with windows (:func:`.windows.crop_windows`): the whole image when it fits in
   the crop, else crop-sized sliding windows;
3. per window: logits = model(crop), upsampled bilinearly to the crop's size; with the flip test the
   mirrored crop's logits, mirrored back, are averaged with them; the window's score is exp(logits);
4. overlapping windows' scores are averaged (sum / number of windows covering each pixel), and the
   scale's score map is resized bilinearly to (H, W);
5. the score maps of all scales are summed; the label of a pixel is the argmax over classes.

Scores are float32 (exp overflows for logits above about 88, far beyond trained models' range).
Crops of consecutive images that share a shape share model calls; ``max_batch`` bounds the crops per
call and the images in flight (default: from the free memory, :mod:`.memory`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from itertools import groupby

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import OptimizedHRNet
from . import memory
from .windows import CITYSCAPES_CROP, Window, crop_windows, scaled_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_NUM_CLASSES = 19  # for the memory estimate of a model that does not say its class count


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive (height, width), got {value!r}")
    return pair


class SegEstimator:
    """Label maps and class scores of whole images with a seg model (N, 3, h, w) -> (N, K, h', w').

    Args:
        model: e.g. ``HRNet(arch, head="seg")`` in eval mode or ``optimize()`` of one; inputs are cast
            to its parameters' device and dtype, logits are upsampled in float32.
        crop_size: the sliding window (height, width); 1024x2048 as the official Cityscapes test.
        stride: the step between windows; default the crop size (official Cityscapes); the
            official generic rule is 2/3 of the crop.
        scales: test scales; the official multi-scale test uses :data:`.windows.CITYSCAPES_SCALES`.
        flip: average each crop's logits with its mirror image's (the official ``FLIP_TEST``).
        base_size: the long side at scale 1 (official Cityscapes: 2048); None: each image's own.
        max_batch: crops per model call, and images in flight; None: from the free memory.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        crop_size: int | Sequence[int] = CITYSCAPES_CROP,
        stride: int | Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        base_size: int | None = None,
        max_batch: int | None = None,
    ):
        if not scales or not all(s > 0 for s in scales):
            raise ValueError(f"scales must be positive numbers, got {scales!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        if base_size is not None and base_size < 1:
            raise ValueError(f"base_size must be positive, got {base_size}")
        core = model.model if isinstance(model, OptimizedHRNet) else model
        if core.training:
            raise ValueError("the model is in train mode (BatchNorm would use batch statistics); call model.eval()")
        weight = next(model.parameters())
        self.model, self.device, self.dtype = model, weight.device, weight.dtype
        self.align_corners = bool(getattr(core, "align_corners", False))
        self.num_classes: int | None = getattr(core, "num_classes", None)
        self._sum_widths = sum(getattr(core, "widths", ())) or memory.W48_WIDTHS
        self.crop_size = _pair(crop_size, "crop_size")
        self.stride = None if stride is None else _pair(stride, "stride")
        self.scales, self.flip, self.base_size = tuple(scales), flip, base_size
        self.max_batch = max_batch
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)

    def batch_size(self, height: int, width: int) -> int:
        """Crops per model call (and images in flight) for images of this size."""
        if self.max_batch is not None:
            return self.max_batch
        sizes = [scaled_size(height, width, s, self.base_size) for s in self.scales]
        pixels = max(min(h, self.crop_size[0]) * min(w, self.crop_size[1]) for h, w in sizes)  # largest window
        classes = self.num_classes or DEFAULT_NUM_CLASSES
        per_item = memory.crop_bytes(pixels, self._sum_widths, classes, self.dtype)
        per_item += memory.image_bytes(height * width, max(h * w for h, w in sizes), classes)
        return memory.auto_max_batch(per_item, pixels, memory.free_bytes(self.device))

    def scores(self, image: Tensor) -> Tensor:
        """One image (3, H, W) uint8 RGB -> float32 class scores (K, H, W) on the model's device."""
        return next(self.scores_stream([(None, image)]))[1]

    def predict(self, image: Tensor) -> Tensor:
        """One image (3, H, W) uint8 RGB -> class ids (H, W), int64 on the model's device."""
        return self.scores(image).argmax(0)

    def predict_stream(self, items: Iterable[tuple[Hashable, Tensor]]) -> Iterator[tuple[Hashable, Tensor]]:
        """(key, image) pairs -> (key, class ids (H, W)), in order; see :meth:`scores_stream`."""
        for key, scores in self.scores_stream(items):
            yield key, scores.argmax(0)

    def scores_stream(self, items: Iterable[tuple[Hashable, Tensor]]) -> Iterator[tuple[Hashable, Tensor]]:
        """(key, image (3, H, W) uint8) pairs -> (key, scores (K, H, W)), in order.

        Images are taken in groups of up to :meth:`batch_size`; the crops of a group that share a
        shape share model calls.
        """
        group: list[tuple[Hashable, Tensor]] = []
        for key, image in items:
            self._check(image)
            group.append((key, image))
            if len(group) >= self.batch_size(*image.shape[-2:]):
                yield from self._run_group(group)
                group = []
        if group:
            yield from self._run_group(group)

    def _check(self, image: Tensor) -> None:
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            what = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"an image must be a (3, H, W) uint8 RGB tensor, got {what}")

    def _normalized(self, image: Tensor, scale: float) -> Tensor:
        x = (image.to(self.device, non_blocking=True).float() / 255 - self._mean) / self._std
        size = scaled_size(*image.shape[-2:], scale, self.base_size)
        if size == tuple(image.shape[-2:]):
            return x
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]

    def _logits(self, crops: Tensor, size: tuple[int, int]) -> Tensor:
        out = self.model(crops.to(self.dtype)).float()
        return F.interpolate(out, size=size, mode="bilinear", align_corners=self.align_corners)

    def _scale_scores(self, inputs: list[Tensor], batch: int) -> list[tuple[Tensor, Tensor]]:
        """Per normalized input (3, h, w): the summed window scores (K, h, w) and window counts (h, w)."""
        views = (False, True) if self.flip else (False,)
        tiles = [(i, w) for i, x in enumerate(inputs) for w in crop_windows(*x.shape[-2:], self.crop_size, self.stride)]
        tiles.sort(key=lambda t: t[1].shape)  # stable: same-shape crops of several images share calls
        sums: list[Tensor | None] = [None] * len(inputs)
        counts = [torch.zeros(x.shape[-2:], device=self.device) for x in inputs]
        pending: dict[tuple[int, Window], Tensor] = {}  # a tile's logits while its other view is missing
        for shape, same in groupby(tiles, key=lambda t: t[1].shape):
            work = [(tile, mirrored) for tile in same for mirrored in views]
            for start in range(0, len(work), batch):
                chunk = work[start : start + batch]
                crops = [inputs[i][:, w.y0 : w.y1, w.x0 : w.x1] for (i, w), _ in chunk]
                crops = torch.stack([c.flip(-1) if m else c for c, ((_, _), m) in zip(crops, chunk, strict=True)])
                for ((i, w), mirrored), logits in zip(chunk, self._logits(crops, shape), strict=True):
                    logits = logits.flip(-1) if mirrored else logits
                    if len(views) == 2 and (i, w) not in pending:
                        pending[(i, w)] = logits
                        continue
                    if (i, w) in pending:
                        logits = (pending.pop((i, w)) + logits) / 2
                    if sums[i] is None:
                        sums[i] = torch.zeros(logits.shape[0], *counts[i].shape, device=self.device)
                    sums[i][:, w.y0 : w.y1, w.x0 : w.x1] += logits.exp()
                    counts[i][w.y0 : w.y1, w.x0 : w.x1] += 1
        return list(zip(sums, counts, strict=True))

    def _run_group(self, group: list[tuple[Hashable, Tensor]]) -> Iterator[tuple[Hashable, Tensor]]:
        finals = self._group_scores(group)
        if self.num_classes is None:
            self.num_classes = finals[0].shape[0]
        for (key, _), scores in zip(group, finals, strict=True):
            yield key, scores

    @torch.no_grad()
    def _group_scores(self, group: list[tuple[Hashable, Tensor]]) -> list[Tensor]:
        batch = self.max_batch or self.batch_size(*group[0][1].shape[-2:])
        finals: list[Tensor | None] = [None] * len(group)
        for scale in self.scales:
            inputs = [self._normalized(image, scale) for _, image in group]
            for k, (total, count) in enumerate(self._scale_scores(inputs, batch)):
                mean = total.div_(count)
                size = tuple(group[k][1].shape[-2:])
                if mean.shape[-2:] != size:
                    mean = F.interpolate(mean[None], size=size, mode="bilinear", align_corners=self.align_corners)[0]
                finals[k] = mean if finals[k] is None else finals[k].add_(mean)
            del inputs
        return finals
