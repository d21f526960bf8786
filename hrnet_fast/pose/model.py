"""The pose model from a checkpoint: arch read from the weights, joint count and arch checked."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..models import HRNet, load_checkpoint
from ..models.checkpoint import read_head_checkpoint
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
    state, head_weight, arch = read_head_checkpoint(checkpoint, "pose", "final_layer.weight", arch, PoseInputError)
    if head_weight.shape[0] != NUM_JOINTS:
        raise PoseInputError(
            f"checkpoint {checkpoint} predicts {head_weight.shape[0]} joints, but COCO keypoints "
            f"(flip pairs, evaluation, drawing) need {NUM_JOINTS}"
        )
    model = HRNet(arch, head="pose", num_joints=NUM_JOINTS, backend=backend)
    load_checkpoint(model, state)
    return model.eval().to(device=device, dtype=dtype)
