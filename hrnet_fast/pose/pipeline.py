"""Top-down pose estimation with a heatmap model: person crops, (flip-tested) heatmaps, decoding.

For each image and its person boxes: crops on the model's device (:func:`.preprocess.person_crops`),
heatmaps from the model (with the flip test, :mod:`.flip`), keypoints in image coordinates
(:func:`.decode.decode_heatmaps`). Crops of consecutive images share model batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .boxes import PIXEL_STD, check_boxes
from .decode import decode_heatmaps
from .flip import flip_test
from .nms import oks_nms, rescore
from .preprocess import person_crops
from .skeleton import FLIP_PAIRS, NUM_JOINTS


class Poses(NamedTuple):
    """The people of one image, on the CPU: keypoints (K, J, 3) as x, y, score; crop centers and
    scales (K, 2), as the official results record them."""

    keypoints: Tensor
    center: Tensor
    scale: Tensor


def _cat(parts: Sequence[Poses], num_joints: int) -> Poses:
    if not parts:
        return Poses(torch.empty(0, num_joints, 3), torch.empty(0, 2), torch.empty(0, 2))
    return Poses(*(torch.cat(field) for field in zip(*parts, strict=True)))


def _split(poses: Poses, n: int) -> tuple[Poses, Poses]:
    return Poses(*(f[:n] for f in poses)), Poses(*(f[n:] for f in poses))


class PoseEstimator:
    """Keypoints of the people in images, given their boxes, with ``model`` (N, 3, h, w) -> (N, J, h', w').

    Args:
        model: a heatmap model, e.g. ``HRNet(arch, head="pose")`` in eval mode; inputs are cast to
            its parameters' device and dtype.
        input_size: the crop (height, width) fed to the model; 256x192 for the official W32/W48.
        flip: average with the mirrored input's heatmaps (the official flip test).
        dark: decode with DARK's Taylor refinement instead of the quarter-pixel rule.
        batch_size: crops per model call (a flip test runs twice as many images per call).
        flip_pairs: the joints that swap places in a mirror image (COCO's by default).

    The joint count of an image without people is ``model.num_joints`` (17 when the model has none).
    """

    def __init__(
        self,
        model: nn.Module,
        input_size: tuple[int, int] = (256, 192),
        *,
        flip: bool = True,
        dark: bool = False,
        batch_size: int = 32,
        flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        weight = next(model.parameters())
        self.model, self.device, self.dtype = model, weight.device, weight.dtype
        self.input_size, self.flip, self.dark = tuple(input_size), flip, dark
        self.batch_size, self.flip_pairs = batch_size, flip_pairs
        self.num_joints = getattr(model, "num_joints", NUM_JOINTS)

    @torch.inference_mode()
    def heatmaps(self, inputs: Tensor) -> Tensor:
        """Model inputs (N, 3, h, w) -> heatmaps (N, J, h', w') in float32."""
        out = flip_test(self.model, inputs, self.flip_pairs) if self.flip else self.model(inputs)
        return out.float()

    def _crops(self, key: Hashable, image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_boxes(boxes, image.shape[-1], image.shape[-2], f"image {key}".rstrip())
        if len(boxes) == 0:
            h, w = self.input_size
            empty = torch.empty(0, 2, device=self.device)
            return torch.empty(0, 3, h, w, device=self.device, dtype=self.dtype), empty, empty
        return person_crops(image.to(self.device, non_blocking=True), boxes, self.input_size, self.dtype)

    def _run(self, inputs: Tensor, center: Tensor, scale: Tensor) -> Poses:
        keypoints = decode_heatmaps(self.heatmaps(inputs), center, scale, dark=self.dark)
        return Poses(keypoints.cpu(), center.cpu(), scale.cpu())

    def estimate(self, image: Tensor, boxes: Tensor) -> Poses:
        """One image (3, H, W) uint8 and its person boxes (K, 4) as x, y, w, h -> its poses."""
        return next(self.estimate_stream([("", image, boxes)]))[1]

    def estimate_stream(self, items: Iterable[tuple[Hashable, Tensor, Tensor]]) -> Iterator[tuple[Hashable, Poses]]:
        """(key, image (3, H, W) uint8, boxes (K, 4)) triples -> (key, poses), in order.

        Crops wait in a queue until they fill a model batch, so images with few people share batches;
        an image's poses are handed out once all its crops have run.
        """
        waiting: deque[tuple[Hashable, int]] = deque()  # images in the queue, with their person counts
        queued: list[tuple[Tensor, Tensor, Tensor]] = []  # crops, centers, scales not run yet
        done: list[Poses] = []  # poses run but not handed out yet, in queue order

        def run(everything: bool) -> None:
            if not queued:
                return
            inputs, center, scale = (torch.cat(f) for f in zip(*queued, strict=True))
            end = len(inputs) if everything else len(inputs) - len(inputs) % self.batch_size
            for i in range(0, end, self.batch_size):
                batch = slice(i, i + self.batch_size)
                done.append(self._run(inputs[batch], center[batch], scale[batch]))
            queued[:] = [(inputs[end:], center[end:], scale[end:])]

        def hand_out() -> Iterator[tuple[Hashable, Poses]]:
            nonlocal done
            ready = _cat(done, self.num_joints)
            while waiting and waiting[0][1] <= len(ready.keypoints):
                key, n = waiting.popleft()
                mine, ready = _split(ready, n)
                yield key, mine
            done = [ready]

        for key, image, boxes in items:
            queued.append(self._crops(key, image, boxes))
            waiting.append((key, len(boxes)))
            if sum(len(q[0]) for q in queued) >= self.batch_size:
                run(everything=False)
            yield from hand_out()
        run(everything=True)
        yield from hand_out()


def rescore_and_suppress(poses: Poses, box_scores: Tensor) -> tuple[Poses, Tensor]:
    """The official per-image post-processing: instance scores (box score x mean confident joint
    score), then OKS-NMS with each crop's area (200 scale_x)(200 scale_y). Returns the kept poses and
    their scores, best first."""
    scores = rescore(poses.keypoints, box_scores)
    areas = (poses.scale * PIXEL_STD).prod(-1)
    keep = oks_nms(poses.keypoints, scores, areas)
    return Poses(*(f[keep] for f in poses)), scores[keep]
