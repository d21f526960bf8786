"""The seg model from a checkpoint: arch and class count read from the weights."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..models import ARCHS, HRNet, load_checkpoint
from ..models.checkpoint import adapt_keys, guess_arch, guess_head, read_state_dict
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
    state = read_state_dict(checkpoint)
    plain, _ = adapt_keys(state, set())  # strip module./model./backbone. to read the layout
    classifier = plain.get(CLASSIFIER_KEY)
    if guess_head(plain) != "seg" or classifier is None:
        raise SegInputError(
            f"checkpoint {checkpoint} has no seg head ({CLASSIFIER_KEY}); "
            f"it looks like a {guess_head(plain)!r} checkpoint"
        )
    if arch is None:
        arch = guess_arch(plain)
        if arch not in ARCHS:
            raise SegInputError(f"cannot tell the arch of checkpoint {checkpoint} ({arch}); pass it explicitly")
    model = HRNet(arch, head="seg", num_classes=classifier.shape[0], backend=backend, align_corners=align_corners)
    load_checkpoint(model, state)
    return model.eval().to(device=device, dtype=dtype)
