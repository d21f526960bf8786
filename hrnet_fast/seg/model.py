"""The seg model from a checkpoint: arch and class count read from the weights."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..models import HRNet, load_checkpoint
from ..models.checkpoint import read_head_checkpoint
from .errors import SegInputError

CLASSIFIER_KEY = "last_layer.3.weight"  # the head's last 1x1 conv: (num_classes, C, 1, 1)


def load_seg_model(
    checkpoint: str | os.PathLike | Mapping,
    arch: str | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
    align_corners: bool = False,
) -> HRNet:
    """``HRNet(arch, head="seg")`` in eval mode with the checkpoint's weights, on ``device``.

    ``arch=None`` takes the arch the checkpoint was made for; the class count is the checkpoint's.
    ``align_corners`` is the bilinear convention the weights were trained with (False for the official
    Cityscapes W48; the repository's HRNet-OCR branch trains with True). Raises :class:`SegInputError`
    for a checkpoint without a seg head and :class:`~hrnet_fast.CheckpointMismatchError` (naming the
    checkpoint's arch) for another arch.
    """
    state, classifier, arch = read_head_checkpoint(checkpoint, "seg", CLASSIFIER_KEY, arch, SegInputError)
    model = HRNet(arch, head="seg", num_classes=classifier.shape[0], backend=backend, align_corners=align_corners)
    load_checkpoint(model, state)
    return model.eval().to(device=device, dtype=dtype)
