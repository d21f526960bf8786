"""Person detectors for the top-down pipeline on videos and image folders.

A detector is any callable ``detector(frame) -> (boxes, scores)``: ``frame`` has ``image`` (3, H, W)
uint8 RGB, ``index`` (0-based position in the video or folder) and ``name``; ``boxes`` (K, 4) are
person boxes x, y, w, h in pixels and ``scores`` (K,) their confidences. Provided:

- :class:`WholeFrame`: the whole frame is one person (score 1), as ``pose-predict`` on one image;
- :class:`DetectionsFile`: the person boxes of a COCO detection results file, by image id;
- :class:`TorchvisionDetector` around a torchvision detection model, built by
  :func:`torchvision_detector` from weights already on disk (never downloaded); by default
  ``fasterrcnn_resnet50_fpn`` keeping person boxes scoring above 0.9, as the official demo of
  deep-high-resolution-net.pytorch does.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch
from torch import Tensor

from .coco import load_detections
from .errors import PoseInputError
from .inputs import DEFAULT_DETECTOR, DEFAULT_DETECTOR_THRESHOLD


class FrameLike(Protocol):
    image: Tensor
    index: int
    name: str


class WholeFrame:
    """One person box covering the whole frame, score 1."""

    def __call__(self, frame: FrameLike) -> tuple[Tensor, Tensor]:
        height, width = frame.image.shape[-2:]
        return torch.tensor([[0.0, 0.0, float(width), float(height)]]), torch.ones(1)


class DetectionsFile:
    """The person boxes (category 1, score >= ``min_score``) of a COCO detection results file.

    A frame's image id is the number its file name holds (``000123.jpg`` -> 123) when ``by_name``,
    else its index; a frame without boxes in the file has no people.
    """

    def __init__(self, path: str | os.PathLike, min_score: float = 0.0, *, by_name: bool = False):
        self.boxes = load_detections(path, min_score)
        self.by_name = by_name

    def image_id(self, frame: FrameLike) -> int:
        stem = os.path.splitext(frame.name)[0]
        if self.by_name and stem.isdigit():
            return int(stem)
        return frame.index

    def __call__(self, frame: FrameLike) -> tuple[Tensor, Tensor]:
        return self.boxes.get(self.image_id(frame), (torch.empty(0, 4), torch.empty(0)))


class TorchvisionDetector:
    """Person boxes from a torchvision-style detection model: ``model([image in 0..1])`` gives one dict
    per image with ``boxes`` (x1, y1, x2, y2), ``labels`` and ``scores``; boxes of ``person_label``
    scoring above ``threshold`` are kept, as x, y, w, h (empty ones dropped)."""

    def __init__(self, model: torch.nn.Module, *, person_label: int = 1, threshold: float = DEFAULT_DETECTOR_THRESHOLD):
        self.model = model.eval()
        self.person_label, self.threshold = person_label, threshold
        weight = next(model.parameters(), None)
        self.device = weight.device if weight is not None else torch.device("cpu")

    @torch.inference_mode()
    def __call__(self, frame: FrameLike) -> tuple[Tensor, Tensor]:
        found = self.model([frame.image.to(self.device).float() / 255])[0]
        keep = (found["labels"] == self.person_label) & (found["scores"] > self.threshold)
        corners = found["boxes"][keep].float().cpu()
        boxes = torch.cat((corners[:, :2], corners[:, 2:] - corners[:, :2]), dim=1)
        scores = found["scores"][keep].float().cpu()
        nonempty = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        return boxes[nonempty], scores[nonempty]


def torchvision_detector(
    name: str = DEFAULT_DETECTOR,
    *,
    weights: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    threshold: float = DEFAULT_DETECTOR_THRESHOLD,
) -> TorchvisionDetector:
    """torchvision's detection model ``name`` with its COCO weights, read from ``weights`` or from
    where torchvision caches its default weights (``torch.hub.get_dir()/checkpoints``); a missing file
    is an error that says how to get it, never a download."""
    try:
        from torchvision import models
    except Exception as exc:  # not installed, or a build that does not match this torch
        raise PoseInputError(f"--detector needs torchvision built for this torch ({exc})") from None
    try:
        default = models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise PoseInputError(f"{name!r} is not a torchvision detection model with COCO weights") from None
    categories = default.meta.get("categories", [])
    if "person" not in categories:
        raise PoseInputError(f"torchvision's {name} weights have no 'person' category")
    path = (
        os.fspath(weights) if weights else os.path.join(torch.hub.get_dir(), "checkpoints", default.url.split("/")[-1])
    )
    if not os.path.isfile(path):
        raise PoseInputError(
            f"detector weights not found at {path}; fetch them once with "
            f"`python -c \"import torchvision; torchvision.models.get_model('{name}', weights='DEFAULT')\"` "
            "or pass --detector-weights"
        )
    model = models.get_model(name, weights=None, weights_backbone=None, num_classes=len(categories))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return TorchvisionDetector(model.to(device), person_label=categories.index("person"), threshold=threshold)
