"""A Cityscapes-format set and a seg checkpoint whose predictions on it are known by construction.

The images are mosaics of BLOCK x BLOCK squares, one class each; a square's red channel is its class's
code value ``RED[k]`` (green and blue are noise). The checkpoint is a w18_small_v1 seg HRNet whose
weights carry the normalized red value v through the network unchanged and turn it into logits
``-SHARPNESS * |v - v_k|``, so each pixel is predicted as the class whose code is nearest:

- every BatchNorm is zero (gamma = beta = 0, mean 0, var 1) except on one carrier channel, so every
  residual branch and every fusion path adds nothing and ReLUs pass the (positive) carrier;
- the stem's two stride-2 3x3 convs and the stage transition copy the carrier with their centre tap,
  so the 1/4-resolution features sample the image at (4y, 4x); layer1's shortcut conv copies it too;
- the head's first 1x1 conv makes ReLU(v - v_k) and ReLU(v_k - v) per class, the last one sums them.

Ground truth is written as label ids (road = 7, ...); pixels within MARGIN of a square's border are
label id 0 or 4 (unlabeled / static: ignored), where bilinear upsampling mixes neighbouring squares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hrnet_fast import HRNet
from hrnet_fast.seg.cityscapes import LABEL_IDS, NUM_CLASSES
from hrnet_fast.seg.estimator import IMAGENET_MEAN, IMAGENET_STD

BLOCK = 32
MARGIN = 8
RED = tuple(130 + 6 * k for k in range(NUM_CLASSES))  # normalized red > 0 for every class: ReLUs pass it
SHARPNESS = 20.0
IMAGE_BLOCKS = ((3, 5), (3, 5), (3, 5))  # squares per image (rows, columns): 45 in all, every class
INTERIOR = (BLOCK - 2 * MARGIN) ** 2  # evaluated pixels per square
CITY = "synthtown"


def code_value(k: int) -> float:
    """Class k's red code after the official normalization."""
    return (RED[k] / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]


def carrier_model(num_classes: int = NUM_CLASSES, arch: str = "w18_small_v1") -> torch.nn.Module:
    """The seg HRNet described in the module docstring, in eval mode (random weights elsewhere)."""
    model = HRNet(arch, head="seg", num_classes=num_classes).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.zero_()
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1 - m.eps)

        def carry(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> None:
            conv.weight.zero_()
            centre = conv.kernel_size[0] // 2
            conv.weight[0, 0, centre, centre] = 1.0
            bn.weight[0] = 1.0

        carry(model.conv1, model.bn1)
        carry(model.conv2, model.bn2)
        shortcut = model.layer1[0].downsample
        carry(shortcut[0], shortcut[1])
        carry(model.transition1[0][0], model.transition1[0][1])
        first, bn, _, last = model.last_layer
        first.weight.zero_()
        first.bias.zero_()
        last.weight.zero_()
        last.bias.zero_()
        for k in range(num_classes):
            v = code_value(k) if k < NUM_CLASSES else 100.0 + k  # extra classes: codes no pixel has
            first.weight[2 * k, 0] = SHARPNESS
            first.bias[2 * k] = -SHARPNESS * v
            first.weight[2 * k + 1, 0] = -SHARPNESS
            first.bias[2 * k + 1] = SHARPNESS * v
            bn.weight[2 * k : 2 * k + 2] = 1.0
            last.weight[k, 2 * k : 2 * k + 2] = -1.0
    return model


@dataclass
class SyntheticCityscapes:
    root: Path
    images: Path
    labels: Path
    classes: list[np.ndarray]  # per image: the class of each square (rows, columns)
    names: list[str]  # image file stems without the _leftImg8bit suffix


def square_classes() -> list[np.ndarray]:
    """Square k (counted over all images, row-major) has class k mod 19."""
    out, k = [], 0
    for rows, cols in IMAGE_BLOCKS:
        out.append((np.arange(k, k + rows * cols) % NUM_CLASSES).reshape(rows, cols))
        k += rows * cols
    return out


def evaluated_mask(rows: int, cols: int) -> np.ndarray:
    """True on the pixels evaluated: each square's interior, MARGIN from its border."""
    inside = np.zeros(BLOCK, dtype=bool)
    inside[MARGIN : BLOCK - MARGIN] = True
    return np.outer(np.tile(inside, rows), np.tile(inside, cols))


def label_ids(classes: np.ndarray, relabel: dict[int, int] | None = None) -> np.ndarray:
    """A labelIds map of the mosaic ``classes`` (train ids, optionally renamed by ``relabel``)."""
    train = np.vectorize(lambda c: (relabel or {}).get(int(c), int(c)))(classes)
    ids = np.array(LABEL_IDS, dtype=np.uint8)[train].repeat(BLOCK, 0).repeat(BLOCK, 1)
    rows, cols = classes.shape
    ignored = np.where((np.indices(ids.shape).sum(0) % 2) == 0, 0, 4).astype(np.uint8)  # unlabeled / static
    return np.where(evaluated_mask(rows, cols), ids, ignored)


def mosaic(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB image (H, W, 3) uint8: red = the square's class code, green and blue random."""
    red = np.array(RED, dtype=np.uint8)[classes].repeat(BLOCK, 0).repeat(BLOCK, 1)
    noise = rng.integers(0, 256, (*red.shape, 2), dtype=np.uint8)
    return np.concatenate((red[..., None], noise), axis=2)


def write_cityscapes(
    root: Path, seed: int = 0, relabel: dict[int, dict[int, int]] | None = None
) -> SyntheticCityscapes:
    """Write leftImg8bit/val/<city>/*_leftImg8bit.png and gtFine/val/<city>/*_gtFine_labelIds.png.

    ``relabel`` maps an image index to {class: written class}: the ground truth of those squares
    names another class than the image shows.
    """
    rng = np.random.default_rng(seed)
    images, labels = root / "leftImg8bit" / "val", root / "gtFine" / "val"
    (images / CITY).mkdir(parents=True)
    (labels / CITY).mkdir(parents=True)
    classes, names = square_classes(), []
    for i, cls in enumerate(classes):
        name = f"{CITY}_{i:06d}_000019"
        Image.fromarray(mosaic(cls, rng)).save(images / CITY / f"{name}_leftImg8bit.png")
        ids = label_ids(cls, (relabel or {}).get(i))
        Image.fromarray(ids).save(labels / CITY / f"{name}_gtFine_labelIds.png")
        names.append(name)
    return SyntheticCityscapes(root, images, labels, classes, names)


def expected_labels(classes: np.ndarray) -> torch.Tensor:
    """The train ids the carrier model predicts on a mosaic, on the evaluated pixels (255 elsewhere)."""
    train = torch.from_numpy(classes).repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
    mask = torch.from_numpy(evaluated_mask(*classes.shape))
    return torch.where(mask, train, torch.full_like(train, 255))
