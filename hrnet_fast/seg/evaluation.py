"""Evaluation over a labelled set: images read ahead on threads, predicted in batches, counted on the device.

An image whose image or label file is missing or fails to decode is reported through ``on_skip`` and
left out; a label map that does not fit its image (size, label kind, class count) stops the run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .dataset import Pair, load_sample, read_ahead
from .errors import SegInputError
from .estimator import SegEstimator
from .metrics import ConfusionMatrix, SegStats


@dataclass
class EvalRun:
    """The statistics, the confusion matrix's counts, and the images left out (path -> why)."""

    stats: SegStats
    confusion: ConfusionMatrix
    images: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


def evaluate(
    estimator: SegEstimator,
    pairs: Sequence[Pair],
    *,
    num_classes: int,
    label_kind: str = "labelids",
    workers: int = 4,
    on_image: Callable[[], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> EvalRun:
    """Predict every image of ``pairs`` and count it against its label map (:mod:`.dataset`)."""
    confusion = ConfusionMatrix(num_classes, estimator.device)
    skipped: dict[str, str] = {}
    targets = {}  # ground truth of the images handed to the estimator and not yet counted
    load = functools.partial(load_sample, label_kind=label_kind, num_classes=num_classes)

    def readable():
        for pair, sample in read_ahead(load, pairs, workers):
            if isinstance(sample, Exception):
                skipped[pair.image] = str(sample)
                if on_skip:
                    on_skip(pair.image, str(sample))
                if on_image:
                    on_image()
                continue
            targets[pair] = sample.target
            yield pair, sample.image

    images = 0
    for pair, prediction in estimator.predict_stream(readable()):
        confusion.update(prediction, targets.pop(pair).to(estimator.device, non_blocking=True))
        images += 1
        if on_image:
            on_image()
    if images == 0:
        raise SegInputError(f"none of the {len(pairs)} images could be read")
    return EvalRun(confusion.stats(), confusion, images, skipped)
