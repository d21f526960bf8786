"""Cityscapes' 19 evaluation classes: names, colours, and the labelIds -> trainIds mapping.

Ground truth ships as ``*_gtFine_labelIds.png`` holding the 34 label ids (0-33) of cityscapesScripts'
``labels.py``; 19 of them are evaluated and renumbered 0-18 (train ids), every other id is ignored
(255). Models predict train ids; a submission to the benchmark server needs label ids again
(:func:`train_ids_to_label_ids`).
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE = 255
NUM_CLASSES = 19

CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# The label id of each train id, in train-id order (road is label id 7, ..., bicycle 33).
LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
MAX_LABEL_ID = 33

# The colour of each train id, as cityscapesScripts draws it.
PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)


def label_id_table() -> Tensor:
    """A (256,) uint8 lookup table: label id -> train id; ids that are not evaluated -> 255."""
    table = torch.full((256,), IGNORE, dtype=torch.uint8)
    table[list(LABEL_IDS)] = torch.arange(NUM_CLASSES, dtype=torch.uint8)
    return table


def label_ids_to_train_ids(label_ids: Tensor) -> Tensor:
    """A uint8 map of Cityscapes label ids (0-33) -> the same map in train ids (0-18, ignored: 255)."""
    return label_id_table().to(label_ids.device)[label_ids.long()]


def train_ids_to_label_ids(train_ids: Tensor) -> Tensor:
    """Train ids (0-18) -> Cityscapes label ids, e.g. for a benchmark submission."""
    table = torch.tensor(LABEL_IDS, dtype=torch.uint8, device=train_ids.device)
    return table[train_ids.long()]
