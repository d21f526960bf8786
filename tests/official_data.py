"""Facts about the official HRNet model definitions, stored in tests/data/ (no official code here).

``keys_<head>_<arch>.txt.gz``: ``key<TAB>shape`` per line, the state_dict of the official model
definition in its own order: pose from leoxiaobin/deep-high-resolution-net.pytorch (6f69e46,
lib/models/pose_hrnet.py, experiments/coco/hrnet/*.yaml), cls from HRNet/HRNet-Image-Classification
(f760c98, lib/models/cls_hrnet.py), seg from HRNet/HRNet-Semantic-Segmentation (HRNet-OCR branch,
0bbb288, lib/models/seg_hrnet.py, cityscapes yaml: ALIGN_CORNERS False).

``official_outputs.pt``: each official definition's eval-mode output for the weights of
:func:`synthetic_state_dict` and the input of :func:`synthetic_input`.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"

# name -> (arch, head, input size of the stored output or None)
OFFICIAL = {
    "pose_w32": ("w32", "pose", (128, 96)),
    "pose_w48": ("w48", "pose", None),
    "cls_w18": ("w18", "cls", None),
    "cls_w18_small_v1": ("w18_small_v1", "cls", (64, 64)),
    "cls_w18_small_v2": ("w18_small_v2", "cls", None),
    "cls_w64": ("w64", "cls", None),
    "seg_w48": ("w48", "seg", (64, 64)),
    "seg_w18_small_v1": ("w18_small_v1", "seg", (64, 64)),
}


def official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    with gzip.open(DATA / f"keys_{name}.txt.gz", "rt") as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")
            shapes[key] = tuple(int(d) for d in shape.split(",")) if shape else ()
    return shapes


def official_outputs() -> dict[str, torch.Tensor]:
    return torch.load(DATA / "official_outputs.pt", weights_only=True)


def synthetic_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic, well-scaled weights for every key, drawn in sorted key order."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(shapes):
        shape = shapes[key]
        name = key.rsplit(".", 1)[-1]
        if name == "num_batches_tracked":
            sd[key] = torch.zeros(shape, dtype=torch.long)
            continue
        if name == "running_var":
            t = 0.5 + torch.rand(shape, generator=g)
        elif name == "running_mean":
            t = 0.1 * torch.randn(shape, generator=g)
        elif name == "weight" and len(shape) == 1:
            t = 0.5 + 0.5 * torch.rand(shape, generator=g)
        elif name == "weight":
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            t = 0.1 * torch.randn(shape, generator=g)
        sd[key] = t
    return sd


def synthetic_input(size: tuple[int, int]) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
