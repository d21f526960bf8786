"""The pose model from a checkpoint: arch read from the weights, joint count and arch checked."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..models import ARCHS, HRNet, load_checkpoint
from ..models.checkpoint import adapt_keys, guess_arch, guess_head, read_state_dict
from .errors import PoseInputError
from .skeleton import NUM_JOINTS


def load_pose_model(
    checkpoint: str | os.PathLike | Mapping,
    arch: str | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
) -> HRNet:
    """``HRNet(arch, head="pose")`` in eval mode with the checkpoint's weights, on ``device``.

    ``arch=None`` takes the arch the checkpoint was made for. Raises :class:`PoseInputError` for a
    checkpoint without a pose head or with other than 17 (COCO) joints, and
    :class:`~hrnet_fast.CheckpointMismatchError` (naming the checkpoint's arch) for another arch.
    """
    state = read_state_dict(checkpoint)
    plain, _ = adapt_keys(state, set())  # strip module./model./backbone. to read the layout
    head_weight = plain.get("final_layer.weight")
    if guess_head(plain) != "pose" or head_weight is None:
        raise PoseInputError(
            f"checkpoint {checkpoint} has no pose head (final_layer.weight); "
            f"it looks like a {guess_head(plain)!r} checkpoint"
        )
    if head_weight.shape[0] != NUM_JOINTS:
        raise PoseInputError(
            f"checkpoint {checkpoint} predicts {head_weight.shape[0]} joints, but COCO keypoints "
            f"(flip pairs, evaluation, drawing) need {NUM_JOINTS}"
        )
    if arch is None:
        arch = guess_arch(plain)
        if arch not in ARCHS:
            raise PoseInputError(f"cannot tell the arch of checkpoint {checkpoint} ({arch}); pass it explicitly")
    model = HRNet(arch, head="pose", num_joints=NUM_JOINTS, backend=backend)
    load_checkpoint(model, state)
    return model.eval().to(device=device, dtype=dtype)
