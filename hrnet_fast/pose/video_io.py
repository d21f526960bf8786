"""Frames in and out, one at a time: videos through PyAV (FFmpeg), image folders through Pillow.

Videos are decoded frame by frame as RGB (never loaded whole) and written as H.264 in yuv420p (or
MPEG-4 Part 2 where the FFmpeg build has no H.264 encoder, VP9 for .webm); a frame of odd width or
height is padded by one edge pixel, as yuv420p needs even sizes. Folders are read in file-name order,
decoding a few images ahead on threads, and written as one PNG per frame. PyAV is the ``video``
extra: ``pip install "hrnet-fast[video]"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..extras import install_hint
from .errors import PoseInputError
from .inputs import IMAGE_EXTENSIONS
from .preprocess import ImageReadError, read_images

DEFAULT_FPS = 25.0
CODECS = {".webm": ("libvpx-vp9",), ".avi": ("mpeg4",)}  # others: H.264, else MPEG-4 Part 2
H264 = ("libx264", "h264", "mpeg4")


@dataclass(frozen=True)
class Frame:
    """One frame: its 0-based index, its time in seconds, a name (the file name in a folder) and the
    image (3, H, W) uint8 RGB."""

    index: int
    time: float
    name: str
    image: Tensor


def _av():
    try:
        import av
    except ImportError:
        raise PoseInputError(f"videos need PyAV, which is not installed: {install_hint('video')}") from None
    return av


class VideoFrames:
    """The frames of a video file, decoded one at a time; ``fps`` is the stream's average rate."""

    def __init__(self, path: str | os.PathLike):
        av = _av()
        self.path = os.fspath(path)
        try:
            self._container = av.open(self.path)
        except (av.error.FFmpegError, OSError) as exc:
            raise PoseInputError(f"could not open video {self.path}: {exc}") from None
        if not self._container.streams.video:
            self._container.close()
            raise PoseInputError(f"{self.path} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self.rate: Fraction = self._stream.average_rate or self._stream.guessed_rate or Fraction(DEFAULT_FPS)
        self.fps = float(self.rate)
        self.count = self._stream.frames or None  # None where the container does not say

    def __iter__(self) -> Iterator[Frame]:
        av = _av()
        try:
            for k, frame in enumerate(self._container.decode(self._stream)):
                image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                time = float(frame.time) if frame.time is not None else k / self.fps
                yield Frame(k, time, f"frame_{k:06d}", image)
        except av.error.FFmpegError as exc:
            raise PoseInputError(f"could not decode {self.path}: {exc}") from None
        finally:
            self._container.close()


class FolderFrames:
    """The images of a folder in file-name order as frames ``1 / fps`` apart; an image that cannot be
    read is reported to ``on_skip(name, why)`` and left out."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = DEFAULT_FPS,
        *,
        workers: int = 4,
        on_skip: Callable[[str, str], None] | None = None,
    ):
        self.path = os.fspath(path)
        self.names = sorted(n for n in os.listdir(self.path) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not self.names:
            raise PoseInputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {self.path}")
        self.fps, self.rate = fps, Fraction(fps).limit_denominator(1001)
        self.count = len(self.names)
        self.workers, self.on_skip = workers, on_skip

    def __iter__(self) -> Iterator[Frame]:
        paths = ((k, os.path.join(self.path, name)) for k, name in enumerate(self.names))
        for k, image in read_images(paths, self.workers):
            if isinstance(image, ImageReadError):
                if self.on_skip:
                    self.on_skip(self.names[k], str(image))
                continue
            yield Frame(k, k / self.fps, self.names[k], image)


def open_frames(path: str | os.PathLike, fps: float | None = None, **folder_options) -> VideoFrames | FolderFrames:
    """A video file's or an image folder's frames (``fps`` sets a folder's frame rate, default 25)."""
    if os.path.isdir(path):
        return FolderFrames(path, fps or DEFAULT_FPS, **folder_options)
    if not os.path.exists(path):
        raise PoseInputError(f"input not found: {path}")
    return VideoFrames(path)


class VideoWriter:
    """Frames (H, W, 3) uint8 RGB arrays -> a video file at ``rate`` frames per second."""

    def __init__(self, path: str | os.PathLike, rate: Fraction | float):
        av = _av()
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        codec = next((c for c in CODECS.get(ext, H264) if c in av.codecs_available), None)
        if codec is None:
            raise PoseInputError(f"this FFmpeg build cannot encode {ext} ({' or '.join(CODECS.get(ext, H264))})")
        self._container = av.open(self.path, mode="w")
        self._stream = self._container.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
        self._stream.pix_fmt = "yuv420p"
        self._av = av
        self._opened = False

    def write(self, rgb: np.ndarray, name: str = "") -> None:
        height, width = rgb.shape[:2]
        rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if not self._opened:
            self._stream.height, self._stream.width = rgb.shape[:2]
            self._opened = True
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        if self._opened:
            self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
        self._container.close()


class FolderWriter:
    """Frames -> one PNG each in a folder (created if needed), named after the input frame."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)

    def write(self, rgb: np.ndarray, name: str) -> None:
        Image.fromarray(rgb).save(os.path.join(self.path, f"{os.path.splitext(name)[0]}.png"), format="PNG")

    def close(self) -> None:
        pass
