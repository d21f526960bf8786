"""A labelled image set on disk: image/label pairs, label maps as train ids, reading ahead on threads.

Cityscapes layout: ``--images leftImg8bit/val`` holds ``<city>/<name>_leftImg8bit.png`` and
``--labels gtFine/val`` holds ``<city>/<name>_gtFine_labelIds.png`` (label ids, mapped to train ids
here) or, with ``label_kind="trainids"``, ``<city>/<name>_gtFine_labelTrainIds.png`` (cityscapesScripts'
``createTrainIdLabelImgs``). Other sets: the label of ``<dir>/<stem>.<ext>`` is ``<dir>/<stem>.png``
under the labels folder, holding train ids 0..K-1 and 255 for ignored pixels.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from . import cityscapes
from .errors import SegInputError

LABEL_KINDS = ("labelids", "trainids")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CITYSCAPES_IMAGE = "_leftImg8bit"
CITYSCAPES_LABEL = {"labelids": "_gtFine_labelIds.png", "trainids": "_gtFine_labelTrainIds.png"}


class Pair(NamedTuple):
    image: str
    label: str


class Sample(NamedTuple):
    """An image (3, H, W) uint8 RGB and its ground truth (H, W) uint8 in train ids (255: ignored)."""

    image: Tensor
    target: Tensor


class Unreadable(SegInputError):
    """An image or label file is missing or could not be decoded; the image is skipped."""


def label_path(image: str, images_dir: str, labels_dir: str, label_kind: str) -> str:
    """Where the label map of ``image`` (a file under ``images_dir``) lies under ``labels_dir``."""
    rel = os.path.relpath(image, images_dir)
    stem = os.path.splitext(rel)[0]
    if stem.endswith(CITYSCAPES_IMAGE):
        return os.path.join(labels_dir, stem.removesuffix(CITYSCAPES_IMAGE) + CITYSCAPES_LABEL[label_kind])
    return os.path.join(labels_dir, stem + ".png")


def find_pairs(images_dir: str, labels_dir: str, label_kind: str = "labelids") -> list[Pair]:
    """Every image file under ``images_dir`` (recursively, sorted) with its label map's path."""
    if label_kind not in LABEL_KINDS:
        raise SegInputError(f"label kind must be one of {LABEL_KINDS}, got {label_kind!r}")
    for what, folder in (("images", images_dir), ("labels", labels_dir)):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    images = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(images_dir)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not images:
        raise SegInputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {images_dir}")
    return [Pair(p, label_path(p, images_dir, labels_dir, label_kind)) for p in images]


def _decode(path: str, what: str, pixels: Callable[[Image.Image], np.ndarray]) -> Tensor:
    """``pixels(image)`` of an image file; :class:`Unreadable` naming ``what`` if it is missing or corrupt."""
    try:
        with Image.open(path) as img:
            return torch.from_numpy(pixels(img))
    except FileNotFoundError:
        raise Unreadable(f"{what} not found: {path}") from None
    except SegInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise Unreadable(f"could not decode {what} {path}: {exc}") from None


def read_image(path: str | os.PathLike) -> Tensor:
    """An image file -> (3, H, W) uint8 RGB, as stored (EXIF orientation not applied, as OpenCV's
    ``imread`` in the official test)."""
    return _decode(os.fspath(path), "image", lambda img: np.array(img.convert("RGB"))).permute(2, 0, 1)


def read_label(path: str | os.PathLike) -> Tensor:
    """A single-channel label map file (8-bit grey or palette PNG) -> (H, W) uint8, values as stored."""

    def ids(img: Image.Image) -> np.ndarray:
        if img.mode not in ("L", "P"):
            raise SegInputError(f"label map {path} is a {img.mode} image; expected one 8-bit channel of ids")
        return np.array(img)

    return _decode(os.fspath(path), "label map", ids)


def to_train_ids(values: Tensor, path: str, label_kind: str, num_classes: int) -> Tensor:
    """A label map as read -> train ids, refusing values the label kind or the class count rules out."""
    top = int(values.max())
    if label_kind == "labelids":
        if top > cityscapes.MAX_LABEL_ID:
            raise SegInputError(
                f"label map {path} holds {top}, not a Cityscapes label id (0-{cityscapes.MAX_LABEL_ID}); "
                "for maps of train ids pass --label-kind trainids"
            )
        return cityscapes.label_ids_to_train_ids(values)
    bad = values[(values >= num_classes) & (values != cityscapes.IGNORE)]
    if bad.numel():
        raise SegInputError(
            f"label map {path} holds class {int(bad[0])}, but the model predicts {num_classes} classes "
            f"(0-{num_classes - 1}, {cityscapes.IGNORE} ignored)"
        )
    return values


def load_sample(pair: Pair, label_kind: str, num_classes: int) -> Sample:
    """Read one pair; :class:`Unreadable` if a file is missing or corrupt, :class:`SegInputError` if the
    label map does not fit the image or the label kind."""
    image = read_image(pair.image)
    values = read_label(pair.label)
    if values.shape != image.shape[-2:]:
        raise SegInputError(
            f"label map {pair.label} is {values.shape[0]}x{values.shape[1]} but its image {pair.image} is "
            f"{image.shape[1]}x{image.shape[2]} (height x width)"
        )
    return Sample(image, to_train_ids(values, pair.label, label_kind, num_classes))


def read_ahead(
    load: Callable[[Pair], Sample], pairs: Iterable[Pair], workers: int = 4
) -> Iterator[tuple[Pair, Sample | Unreadable]]:
    """(pair, sample or the Unreadable error) in order, loading at most ``2 * workers`` ahead on threads.
    Any other error of ``load`` is raised here."""
    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: deque = deque()

        def take():
            pair, future = ahead.popleft()
            try:
                return pair, future.result()
            except Unreadable as exc:
                return pair, exc

        for pair in pairs:
            ahead.append((pair, pool.submit(load, pair)))
            if len(ahead) >= 2 * workers:
                yield take()
        while ahead:
            yield take()
