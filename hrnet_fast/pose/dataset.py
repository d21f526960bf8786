"""The pipeline over a COCO dataset: every image with person boxes, in batches, to results dicts.

Images are read ahead on threads; an image that is missing or fails to decode is reported through
``on_skip`` and left out (of the results and, by the caller, of the evaluation), never fatal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pycocotools.coco import COCO

from .boxes import check_boxes
from .coco import BoxesByImage, keypoint_results
from .errors import PoseInputError
from .pipeline import PoseEstimator, rescore_and_suppress
from .preprocess import ImageReadError, read_images


@dataclass
class DatasetPredictions:
    """Results dicts in the official format, the images left out (id -> why) and box counts."""

    results: list[dict] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    images: int = 0  # images with boxes that were run
    boxes: int = 0  # boxes run (before OKS-NMS)


def boxes_for_dataset(coco: COCO, boxes: BoxesByImage) -> tuple[BoxesByImage, int]:
    """The boxes of images the annotation file lists, each checked against the image's size there,
    and the number of boxes dropped because their image id is not in the annotation file."""
    known = {i: b for i, b in boxes.items() if i in coco.imgs}
    if not known:
        raise PoseInputError(
            f"no person boxes for any of the {len(coco.imgs)} images of the annotation file "
            f"(boxes were given for {len(boxes)} image ids)"
        )
    for image_id, (b, _) in known.items():
        info = coco.imgs[image_id]
        check_boxes(b, info["width"], info["height"], f"image {image_id} ({info.get('file_name', '')})")
    dropped = sum(len(b) for i, (b, _) in boxes.items() if i not in coco.imgs)
    return known, dropped


def predict_dataset(
    estimator: PoseEstimator,
    coco: COCO,
    boxes: BoxesByImage,
    images_dir: str | os.PathLike,
    *,
    workers: int = 4,
    on_image: Callable[[], None] | None = None,
    on_skip: Callable[[int, str], None] | None = None,
) -> DatasetPredictions:
    """Poses for every image of ``boxes`` (already checked by :func:`boxes_for_dataset`), read from
    ``images_dir / file_name``; rescored and OKS-NMS'd per image like the official evaluation."""
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    out = DatasetPredictions()
    paths = ((i, os.path.join(images_dir, coco.imgs[i]["file_name"])) for i in sorted(boxes))

    def readable():
        for image_id, image in read_images(paths, workers):
            if isinstance(image, ImageReadError):
                out.skipped[image_id] = str(image)
                if on_skip:
                    on_skip(image_id, str(image))
                if on_image:
                    on_image()
                continue
            yield image_id, image, boxes[image_id][0]

    for image_id, poses in estimator.estimate_stream(readable()):
        kept, scores = rescore_and_suppress(poses, boxes[image_id][1])
        out.results.extend(keypoint_results(image_id, kept.keypoints, scores, kept.center, kept.scale))
        out.images += 1
        out.boxes += len(poses.keypoints)
        if on_image:
            on_image()
    if out.images == 0:
        raise PoseInputError(f"none of the {len(out.skipped)} images with boxes could be read from {images_dir}")
    return out
