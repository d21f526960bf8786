"""COCO person keypoints: annotation and detection files in, results JSON out, COCOeval's ten stats.

Results follow the official format: one dict per person with ``image_id``, ``category_id`` (1),
``keypoints`` (x1, y1, s1, ..., x17, y17, s17), ``score``, and the crop's ``center`` and ``scale``.
Evaluation is pycocotools' ``COCOeval(gt, dt, "keypoints")``; its stats are returned by name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import defaultdict

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from .errors import PoseInputError
from .skeleton import NUM_JOINTS

PERSON = 1
STAT_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
_GT_KEYS = ("image_id", "category_id", "bbox", "area", "iscrowd", "keypoints", "num_keypoints")
_DET_KEYS = ("image_id", "category_id", "bbox", "score")

BoxesByImage = dict[int, tuple[Tensor, Tensor]]  # image id -> boxes (K, 4) xywh, scores (K,)


def _read_json(path: str | os.PathLike, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoseInputError(f"{what} {path} is not valid JSON: {exc}") from None


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def load_keypoint_annotations(path: str | os.PathLike) -> COCO:
    """A COCO person-keypoints annotation file -> a pycocotools ``COCO``, after checking it can be
    evaluated: it lists images, a person category with 17 keypoints, and keypoints on every person."""
    data = _read_json(path, "annotation file")
    if not isinstance(data, dict) or not data.get("images"):
        raise PoseInputError(f"annotation file {path} lists no images")
    person = [c for c in data.get("categories", []) if c.get("id") == PERSON]
    if not person or len(person[0].get("keypoints", [])) != NUM_JOINTS:
        raise PoseInputError(
            f"annotation file {path} has no person category (id 1) with {NUM_JOINTS} keypoints; "
            "a COCO person_keypoints_*.json file is needed, not instances_*.json"
        )
    for ann in data.get("annotations", []):
        if ann.get("category_id") != PERSON:
            continue
        missing = [k for k in _GT_KEYS if k not in ann]
        if missing or len(ann["keypoints"]) != 3 * NUM_JOINTS:
            raise PoseInputError(
                f"annotation file {path}: annotation {ann.get('id')} has "
                + (f"no {', '.join(missing)}" if missing else f"{len(ann['keypoints'])} keypoint values")
                + f"; each person needs {', '.join(_GT_KEYS)} with {3 * NUM_JOINTS} keypoint values"
            )
    coco = COCO()
    coco.dataset = data
    with _quiet():
        coco.createIndex()
    return coco


def ground_truth_boxes(coco: COCO) -> BoxesByImage:
    """The official evaluation with ground-truth boxes: each non-crowd person with labelled keypoints,
    its box clipped to the image (``x2 = min(W-1, x1 + max(0, w-1))``, alike for y), score 1.
    Boxes left with no width or height are dropped (the official code would crop a degenerate box)."""
    found: dict[int, list[list[float]]] = defaultdict(list)
    for image_id in coco.getImgIds():
        info = coco.imgs[image_id]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=[PERSON], iscrowd=False)):
            x, y, w, h = ann["bbox"]
            x1, y1 = max(0.0, x), max(0.0, y)
            x2 = min(info["width"] - 1.0, x1 + max(0.0, w - 1))
            y2 = min(info["height"] - 1.0, y1 + max(0.0, h - 1))
            if ann["area"] > 0 and x2 > x1 and y2 > y1 and max(ann["keypoints"]) > 0:
                found[image_id].append([x1, y1, x2 - x1, y2 - y1])
    return {i: (torch.tensor(b, dtype=torch.float32), torch.ones(len(b))) for i, b in found.items()}


def load_detections(path: str | os.PathLike, min_score: float = 0.0) -> BoxesByImage:
    """A COCO detection results file (a list of image_id, category_id, bbox xywh, score) -> the
    person boxes (category 1) with score >= ``min_score``, by image id."""
    data = _read_json(path, "boxes file")
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise PoseInputError(f"boxes file {path} must be a JSON list of detections ({', '.join(_DET_KEYS)})")
    found: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))
    for k, det in enumerate(data):
        missing = [key for key in _DET_KEYS if key not in det]
        if missing or len(det["bbox"]) != 4:
            raise PoseInputError(
                f"boxes file {path}: detection {k} has "
                + (f"no {', '.join(missing)}" if missing else f"bbox {det['bbox']}")
                + f"; each needs {', '.join(_DET_KEYS)} with bbox = [x, y, w, h]"
            )
        if det["category_id"] == PERSON and det["score"] >= min_score:
            boxes, scores = found[det["image_id"]]
            boxes.append([float(v) for v in det["bbox"]])
            scores.append(float(det["score"]))
    return {i: (torch.tensor(b, dtype=torch.float32), torch.tensor(s)) for i, (b, s) in found.items()}


def keypoint_results(image_id: int, keypoints: Tensor, scores: Tensor, center: Tensor, scale: Tensor) -> list[dict]:
    """One image's people, keypoints (K, J, 3), scores (K,), centers and scales (K, 2) -> result dicts."""
    return [
        {
            "image_id": image_id,
            "category_id": PERSON,
            "keypoints": kp,
            "score": sc,
            "center": c,
            "scale": s,
        }
        for kp, sc, c, s in zip(
            keypoints.flatten(1).tolist(), scores.tolist(), center.tolist(), scale.tolist(), strict=True
        )
    ]


def write_results(results: list[dict], path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(results, f)


def evaluate_keypoints(
    coco: COCO, results: list[dict] | str | os.PathLike, image_ids=None, verbose: bool = False
) -> dict[str, float]:
    """COCOeval keypoints on ``results`` (dicts, or a results JSON file) against ``coco``, optionally
    over ``image_ids`` only -> the ten stats by name (-1 where the ground truth has none)."""
    if not isinstance(results, list):
        results = _read_json(results, "results file")
    if not results:
        raise PoseInputError("there are no keypoint results to evaluate")
    with contextlib.nullcontext() if verbose else _quiet():
        detections = coco.loadRes([dict(r) for r in results])  # loadRes adds keys to each dict
        evaluator = COCOeval(coco, detections, "keypoints")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, (float(v) for v in evaluator.stats), strict=True))


def format_stats(stats: dict[str, float]) -> str:
    """The stats as a two-row table: names, then values to three decimals."""
    names = " | ".join(f"{n:>7}" for n in stats)
    values = " | ".join(f"{v:7.3f}" for v in stats.values())
    return f"{names}\n{values}"
