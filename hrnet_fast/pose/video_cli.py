"""``hrnet-fast pose-predict`` on a video file or an image folder (parsers here; torch, PyAV and
torchvision are imported when the command runs).

hrnet-fast pose-predict walk.mp4 --checkpoint PTH [--detector] [--out walk_pose.mp4] [--keypoints walk_pose.jsonl]
hrnet-fast pose-predict frames/ --checkpoint PTH --boxes detections.json [--out frames_pose/]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from .inputs import DEFAULT_DETECTOR, DEFAULT_DETECTOR_THRESHOLD, is_video_path


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``pose-predict`` takes for a video file or an image folder."""
    group = parser.add_argument_group("videos and image folders")
    group.add_argument(
        "--detector",
        nargs="?",
        const=DEFAULT_DETECTOR,
        metavar="NAME",
        help=f"person boxes from a torchvision detection model (default {DEFAULT_DETECTOR}) whose COCO weights "
        "are on disk; without --detector or --boxes each frame is one person box",
    )
    group.add_argument("--detector-weights", help="the detector's state_dict file (default: torchvision's cache)")
    group.add_argument(
        "--detector-threshold",
        type=float,
        default=DEFAULT_DETECTOR_THRESHOLD,
        help=f"keep person boxes scoring above this (default {DEFAULT_DETECTOR_THRESHOLD})",
    )
    group.add_argument("--fps", type=float, help="frame rate of an image folder (default 25)")
    group.add_argument("--keypoints", help="JSON-lines output, one line per frame (default: beside --out)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_outputs(source: str, out: str | None, keypoints: str | None) -> tuple[str, str]:
    """The drawing's path (a video, or a folder of PNG frames) and the JSON-lines path.

    A video ``walk.mp4`` gives ``walk_pose.mp4`` and ``walk_pose.jsonl``; a folder ``frames/`` gives the
    folder ``frames_pose/`` holding the PNG frames and ``keypoints.jsonl``.
    """
    base = os.path.splitext(source.rstrip(os.sep))[0] if is_video_path(source) else source.rstrip(os.sep)
    out = out or (f"{base}_pose.mp4" if is_video_path(source) else f"{base}_pose")
    if keypoints is None:
        keypoints = f"{os.path.splitext(out)[0]}.jsonl" if is_video_path(out) else os.path.join(out, "keypoints.jsonl")
    return out, keypoints


def _detector(args: argparse.Namespace, device, by_name: bool):
    from .detect import DetectionsFile, WholeFrame, torchvision_detector
    from .errors import PoseInputError

    if args.detector and args.boxes:
        raise PoseInputError("give either --detector or --boxes, not both")
    if args.boxes:
        return DetectionsFile(args.boxes, args.min_box_score, by_name=by_name), f"boxes from {args.boxes}"
    if args.detector:
        found = torchvision_detector(
            args.detector, weights=args.detector_weights, device=device, threshold=args.detector_threshold
        )
        return found, f"torchvision {args.detector} person boxes scoring above {args.detector_threshold}"
    return WholeFrame(), "no detector: each frame is one person box (use --detector or --boxes)"


def run_video(args: argparse.Namespace, make_estimator: Callable) -> int:
    """Poses on every frame of ``args.image`` (a video or a folder): a drawing and JSON lines."""
    from ..progress import progress_bar
    from .video import estimate_frames
    from .video_io import FolderWriter, VideoWriter, open_frames

    skipped: list[tuple[str, str]] = []
    frames = open_frames(args.image, args.fps, on_skip=lambda name, why: skipped.append((name, why)))
    out, keypoints_path = default_outputs(args.image, args.out, args.keypoints)
    estimator = make_estimator(args)
    detector, source = _detector(args, estimator.device, by_name=os.path.isdir(args.image))
    count = frames.count or "an unknown number of"
    print(f"{args.image}: {count} frames at {frames.fps:g} fps; {source}", file=sys.stderr)
    writer = VideoWriter(out, frames.rate) if is_video_path(out) else FolderWriter(out)
    start, done, people = time.perf_counter(), 0, 0
    try:
        with open(keypoints_path, "w") as lines, progress_bar(frames.count, "frame", not args.no_progress) as bar:
            for found in estimate_frames(estimator, frames, detector):
                writer.write(found.drawing(args.threshold), found.frame.name)
                lines.write(json.dumps(found.record()) + "\n")
                done, people = done + 1, people + len(found.scores)
                while skipped:
                    bar.write("warning: skipped {}: {}".format(*skipped.pop(0)), file=sys.stderr)
                bar.update()
    finally:
        writer.close()
    for name, why in skipped:
        print(f"warning: skipped {name}: {why}", file=sys.stderr)
    seconds = time.perf_counter() - start
    print(f"{done} frames, {people} poses in {seconds:.1f} s ({done / seconds:.1f} frames/s)", file=sys.stderr)
    print(f"wrote {out} and {keypoints_path}")
    return 0
