"""What the pose commands take in: file kinds told apart by extension, and the default person detector
(standard library only, for the CLI's parsers)."""

from __future__ import annotations

import os

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_DETECTOR = "fasterrcnn_resnet50_fpn"  # torchvision's, as in the official demo
DEFAULT_DETECTOR_THRESHOLD = 0.9  # the official demo keeps person boxes scoring above 0.9


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video by its extension (it need not exist yet)."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def is_frames_input(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of images or a video file: input for the frame-by-frame pipeline."""
    return os.path.isdir(path) or (os.path.isfile(path) and is_video_path(path))
