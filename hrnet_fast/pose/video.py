"""Poses on every frame of a video or an image folder: person boxes from a detector, the top-down
pipeline with crops of consecutive frames sharing model batches, then the official per-image
rescoring and OKS-NMS. Frames stream through: only the frames whose crops wait for a full batch are
held in memory.

from hrnet_fast.pose import PoseEstimator, load_pose_model
from hrnet_fast.pose.video import estimate_frames
from hrnet_fast.pose.video_io import open_frames
for found in estimate_frames(PoseEstimator(load_pose_model(path)), open_frames("walk.mp4"), detector):
    found.poses.keypoints  # (K, 17, 3) x, y, score in the frame's pixels
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import Tensor

from .draw import KEYPOINT_THRESHOLD, draw_poses
from .pipeline import PoseEstimator, Poses, rescore_and_suppress
from .video_io import Frame

Detector = Callable[[Frame], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class FramePoses:
    """A frame, the people kept after OKS-NMS and their scores (best first)."""

    frame: Frame
    poses: Poses
    scores: Tensor

    def record(self) -> dict:
        """One JSON-lines record: frame index, time (s), name, and per person its score, keypoints
        [[x, y, score] x 17], crop center and scale (the official results' fields)."""
        people = [
            {
                "score": round(s, 5),
                "keypoints": [[round(v, 3) for v in joint] for joint in kp],
                "center": c,
                "scale": sc,
            }
            for s, kp, c, sc in zip(
                self.scores.tolist(),
                self.poses.keypoints.tolist(),
                self.poses.center.tolist(),
                self.poses.scale.tolist(),
                strict=True,
            )
        ]
        return {"frame": self.frame.index, "time": round(self.frame.time, 6), "name": self.frame.name, "people": people}

    def drawing(self, threshold: float = KEYPOINT_THRESHOLD) -> np.ndarray:
        """The frame with the skeletons drawn, (H, W, 3) uint8 RGB."""
        image = Image.fromarray(self.frame.image.permute(1, 2, 0).numpy())
        return np.asarray(draw_poses(image, self.poses.keypoints, threshold))


def estimate_frames(estimator: PoseEstimator, frames: Iterable[Frame], detector: Detector) -> Iterator[FramePoses]:
    """Each frame's people, in order: ``detector(frame)`` gives boxes (K, 4) x, y, w, h and scores (K,)."""
    waiting: dict[str, tuple[Frame, Tensor]] = {}  # frames whose poses are not back yet, with box scores

    def items():
        for frame in frames:
            boxes, box_scores = detector(frame)
            waiting[frame.name] = (frame, box_scores)
            yield frame.name, frame.image, boxes

    for name, poses in estimator.estimate_stream(items()):
        frame, box_scores = waiting.pop(name)
        kept, scores = rescore_and_suppress(poses, box_scores)
        yield FramePoses(frame, kept, scores)
