"""A small COCO person-keypoints dataset built on the fly: images, annotations, detection boxes.

Every person has a box, 17 keypoints inside it (some unlabelled: 0, 0, 0), an area in COCO's medium
(32^2..96^2) or large (> 96^2) range, and detections that jitter the boxes, plus one false positive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hrnet_fast.pose.skeleton import KEYPOINT_NAMES, SKELETON

IMAGE_SIZES = ((120, 160), (150, 200), (240, 180), (200, 260))  # (height, width)


@dataclass
class SyntheticCoco:
    root: Path
    ann: Path
    images: Path
    boxes: Path
    data: dict


def _person(rng: np.random.Generator, height: int, width: int, large: bool) -> dict:
    w = rng.uniform(90, 120) if large else rng.uniform(40, 60)
    h = w * rng.uniform(1.2, 1.6)
    w, h = min(w, width - 2), min(h, height - 2)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    kx = rng.uniform(x + 2, x + w - 2, 17)
    ky = rng.uniform(y + 2, y + h - 2, 17)
    labelled = rng.random(17) > 0.15
    labelled[:3] = True
    v = np.where(labelled, rng.choice([1, 2], 17), 0)
    keypoints = np.stack((kx * labelled, ky * labelled, v), axis=1).round(2)
    return {
        "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
        "area": round(w * h * 0.7, 2),
        "keypoints": keypoints.reshape(-1).tolist(),
        "num_keypoints": int(labelled.sum()),
        "iscrowd": 0,
        "category_id": 1,
    }


def make_dataset(root: Path, seed: int = 0) -> SyntheticCoco:
    """Write images/, person_keypoints.json and detections.json under ``root``."""
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations, detections = [], [], []
    for image_id, (height, width) in enumerate(IMAGE_SIZES, start=1):
        name = f"{image_id:012d}.png" if image_id % 2 else f"{image_id:012d}.jpg"
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for k in range(1 + image_id % 3):
            person = _person(rng, height, width, large=(image_id + k) % 2 == 0)
            annotations.append(person | {"id": len(annotations) + 1, "image_id": image_id})
            jitter = rng.normal(0, 2, 4)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [round(float(v), 2) for v in np.array(person["bbox"]) + jitter],
                    "score": round(float(rng.uniform(0.5, 1.0)), 3),
                }
            )
    detections.append({"image_id": 1, "category_id": 1, "bbox": [5.0, 5.0, 30.0, 50.0], "score": 0.2})
    detections.append({"image_id": 2, "category_id": 3, "bbox": [5.0, 5.0, 30.0, 50.0], "score": 0.9})
    categories = [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
        }
    ]
    data = {"images": images, "annotations": annotations, "categories": categories}
    ann = root / "person_keypoints.json"
    ann.write_text(json.dumps(data))
    boxes = root / "detections.json"
    boxes.write_text(json.dumps(detections))
    return SyntheticCoco(root, ann, images_dir, boxes, data)


def gt_keypoints(data: dict, image_id: int) -> torch.Tensor:
    """The labelled keypoints (K, 17, 3) of one image's people, in annotation order."""
    people = [a["keypoints"] for a in data["annotations"] if a["image_id"] == image_id]
    return torch.tensor(people, dtype=torch.float64).view(-1, 17, 3)
