"""The pose subcommands of ``hrnet-fast``.

hrnet-fast pose-eval --checkpoint PTH --ann person_keypoints_val2017.json --images val2017/
                     [--boxes detections.json] [--out results.json] [--stats stats.json] ...
hrnet-fast pose-predict IMAGE --checkpoint PTH [--boxes detections.json] [--out IMAGE_pose.png] ...

This module's top level imports no torch (``hrnet-fast --help`` stays instant, see
:mod:`hrnet_fast.cli`); the command functions import the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .. import arguments
from .draw import KEYPOINT_THRESHOLD
from .errors import PoseInputError
from .inputs import is_frames_input
from .video_cli import add_video_arguments, run_video

_DTYPES = ("float32", "float16", "bfloat16")
_SHOWN_SKIPS = 5
# pose-predict's exit statuses
DRAWN, NOTHING_TO_DRAW, BAD_INPUT = 0, 1, arguments.BAD_INPUT


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="pose checkpoint (.pth), e.g. the official W32 file")
    parser.add_argument("--arch", type=arguments.arch, help="default: the arch the checkpoint was made for")
    parser.add_argument("--size", type=arguments.size, default=(256, 192), help="model input HxW (default 256x192)")
    parser.add_argument(
        "--batch", type=arguments.positive_int, default=32, help="person crops per model call (default 32)"
    )
    parser.add_argument("--backend", default="auto", type=arguments.backend_or_auto, help="auto (default) or a name")
    parser.add_argument(
        "--device", default="auto", type=arguments.device, help="auto (cuda when available), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument("--dtype", default="float32", choices=_DTYPES)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True, help="flip test (default: on)")
    parser.add_argument("--dark", action="store_true", help="DARK decoding instead of the quarter-pixel rule")
    parser.add_argument("--min-box-score", type=float, default=0.0, help="ignore boxes scoring lower (default 0)")


def _estimator(args: argparse.Namespace):
    import torch

    from .model import load_pose_model
    from .pipeline import PoseEstimator

    model = load_pose_model(
        args.checkpoint, args.arch, device=args.device, dtype=getattr(torch, args.dtype), backend=args.backend
    )
    h, w = args.size
    flip = "flip test" if args.flip else "no flip test"
    decoding = "DARK" if args.dark else "quarter-pixel"
    print(
        f"HRNet-{model.arch.name} pose, input {h}x{w}, {args.dtype}, on {args.device}, backend {args.backend}; "
        f"{flip}, {decoding} decoding",
        file=sys.stderr,
    )
    return PoseEstimator(model, args.size, flip=args.flip, dark=args.dark, batch_size=args.batch)


def cmd_pose_eval(args: argparse.Namespace) -> int:
    from ..progress import progress_bar
    from .coco import (
        evaluate_keypoints,
        format_stats,
        ground_truth_boxes,
        load_detections,
        load_keypoint_annotations,
        write_results,
    )
    from .dataset import boxes_for_dataset, predict_dataset

    coco = load_keypoint_annotations(args.ann)
    if args.boxes:
        boxes, source = load_detections(args.boxes, args.min_box_score), f"detections in {args.boxes}"
    else:
        boxes, source = ground_truth_boxes(coco), "ground-truth boxes"
    boxes, dropped = boxes_for_dataset(coco, boxes)
    if not os.path.isdir(args.images):
        raise FileNotFoundError(f"images folder not found: {args.images}")
    estimator = _estimator(args)
    n_boxes = sum(len(b) for b, _ in boxes.values())
    print(
        f"{len(coco.imgs)} images annotated; {n_boxes} person boxes on {len(boxes)} of them ({source})",
        file=sys.stderr,
    )
    if dropped:
        print(f"warning: ignored {dropped} boxes whose image id is not in {args.ann}", file=sys.stderr)

    skips: list[str] = []
    with progress_bar(len(boxes), "image", enabled=not args.no_progress) as bar:

        def report_skip(image_id: int, why: str) -> None:
            skips.append(why)
            if len(skips) <= _SHOWN_SKIPS:
                bar.write(f"warning: skipped image {image_id}: {why}", file=sys.stderr)

        start = time.perf_counter()
        run = predict_dataset(
            estimator, coco, boxes, args.images, workers=args.workers, on_image=bar.update, on_skip=report_skip
        )
        seconds = time.perf_counter() - start
    if len(skips) > _SHOWN_SKIPS:
        print(f"warning: skipped {len(skips)} images in all (could not be read)", file=sys.stderr)
    print(
        f"{run.images} images, {run.boxes} people in {seconds:.1f} s ({run.images / seconds:.1f} images/s, "
        f"{run.boxes / seconds:.1f} people/s); {len(run.results)} poses after OKS-NMS",
        file=sys.stderr,
    )
    if args.out:
        write_results(run.results, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    evaluated = [i for i in coco.imgs if i not in run.skipped]
    stats = evaluate_keypoints(coco, run.results, image_ids=evaluated)
    scope = f" on the {len(evaluated)} readable images" if run.skipped else ""
    print(f"COCO keypoint evaluation (pycocotools){scope}:\n{format_stats(stats)}")
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=1)
    return 0


def _boxes_for_image(args: argparse.Namespace, width: int, height: int):
    """The person boxes (K, 4) as x, y, w, h and their scores (K,) to run on ``args.image``."""
    import torch

    from .coco import load_detections

    if not args.boxes:
        return torch.tensor([[0.0, 0.0, width, height]]), torch.ones(1)
    found = load_detections(args.boxes, args.min_box_score)
    image_id = args.image_id
    stem = os.path.splitext(os.path.basename(args.image))[0]
    if image_id is None and stem.isdigit():
        image_id = int(stem)
    elif image_id is None and len(found) == 1:
        image_id = next(iter(found))
    if image_id is None:
        raise PoseInputError(
            f"{args.boxes} holds boxes for {len(found)} images; say which is {args.image} with --image-id"
        )
    if image_id not in found:
        raise PoseInputError(
            f"{args.boxes} has no person boxes for image id {image_id} (score >= {args.min_box_score})"
        )
    return found[image_id]


def drawing_path(image: str, out: str | None) -> str:
    """Where pose-predict writes: ``out``, else ``<image stem>_pose.png`` beside the image; never the image."""
    path = out or os.path.join(os.path.dirname(image), f"{os.path.splitext(os.path.basename(image))[0]}_pose.png")
    if os.path.abspath(path) == os.path.abspath(image):
        raise PoseInputError(f"--out {path} is the input image; choose another file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PoseInputError(f"--out {path}: folder {folder} does not exist")
    return path


def _nothing_to_draw(keypoints, threshold: float, width: int, height: int) -> str | None:
    """Why a drawing of ``keypoints`` would show nothing (no joint above ``threshold``, or all such
    joints outside the image), or None when it shows at least one joint."""
    from .draw import joints_in_image

    if joints_in_image(keypoints, threshold, width, height).any():
        return None
    above = int((keypoints[..., 2] > threshold).sum())
    if above == 0:
        best = f" (the best scores {float(keypoints[..., 2].max()):.3f})" if keypoints.numel() else ""
        return f"no joint scores above --threshold {threshold}{best}"
    return f"all {above} joints scoring above --threshold {threshold} lie outside the {width}x{height} image"


def cmd_pose_predict(args: argparse.Namespace) -> int:
    """Draw the poses in ``args.image``; exit status 0 (drawn), 1 (nothing to draw: no image written).
    A video file or a folder of images goes to :func:`.video_cli.run_video`."""
    if is_frames_input(args.image):
        return run_video(args, _estimator)
    from PIL import Image

    from .draw import draw_poses
    from .pipeline import rescore_and_suppress
    from .preprocess import read_image

    out = drawing_path(args.image, args.out)
    image = read_image(args.image)
    height, width = image.shape[1:]
    boxes, box_scores = _boxes_for_image(args, width, height)
    poses, scores = rescore_and_suppress(_estimator(args).estimate(image, boxes), box_scores)
    for k, (person, score) in enumerate(zip(poses.keypoints, scores, strict=True)):
        shown = int((person[:, 2] > args.threshold).sum())
        print(f"person {k}: score {score:.3f}, {shown}/{len(person)} joints above {args.threshold}")
    why = _nothing_to_draw(poses.keypoints, args.threshold, width, height)
    if why is not None:
        print(f"hrnet-fast pose-predict: nothing to draw: {why}; no image written", file=sys.stderr)
        return NOTHING_TO_DRAW
    drawing = draw_poses(Image.fromarray(image.permute(1, 2, 0).numpy()), poses.keypoints, args.threshold)
    drawing.save(out, format="PNG")
    print(f"wrote {out}")
    return DRAWN


def add_commands(subparsers) -> None:
    """Add ``pose-eval`` and ``pose-predict`` to the ``hrnet-fast`` subcommands."""
    ev = subparsers.add_parser("pose-eval", help="COCO keypoint AP/AR of a pose checkpoint (pycocotools)")
    _add_model_arguments(ev)
    ev.add_argument("--ann", required=True, help="COCO person_keypoints_*.json annotation file")
    ev.add_argument("--images", required=True, help="folder holding the annotation's image files")
    ev.add_argument("--boxes", help="COCO detection results JSON (default: ground-truth person boxes)")
    ev.add_argument("--out", help="write the keypoint results JSON (official format) here")
    ev.add_argument("--stats", help="write the ten AP/AR stats as JSON here")
    ev.add_argument("--workers", type=arguments.positive_int, default=4, help="image decoding threads (default 4)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when not on a terminal)")
    ev.set_defaults(func=arguments.reporting_errors(cmd_pose_eval, PoseInputError))

    pr = subparsers.add_parser(
        "pose-predict",
        help="draw the skeletons a pose checkpoint finds in an image, a video or an image folder",
        description="Find the people's keypoints in one image and draw them into a PNG, or in every frame of a "
        "video or image folder (a drawn video or PNG frames, and JSON lines). Exit status: "
        f"{DRAWN} drawn; {NOTHING_TO_DRAW} nothing to draw (no joint above --threshold, or all of them "
        f"outside the image; no image written); {BAD_INPUT} bad input.",
    )
    pr.add_argument("image", help="an image file Pillow can read, a video file or a folder of images")
    _add_model_arguments(pr)
    pr.add_argument("--boxes", help="COCO detection results JSON (default: the whole image is one person box)")
    pr.add_argument("--image-id", type=int, help="the image's id in --boxes (default: from a numeric file name)")
    pr.add_argument(
        "--out",
        help="PNG file to write (default: <image stem>_pose.png beside the image); for a video or folder a video "
        "file (.mp4, .mkv, ...) or a folder of PNG frames (default: <stem>_pose.mp4 or <folder>_pose/ beside it)",
    )
    pr.add_argument(
        "--threshold",
        type=float,
        default=KEYPOINT_THRESHOLD,
        help=f"draw joints scoring above this (default {KEYPOINT_THRESHOLD})",
    )
    add_video_arguments(pr)
    pr.set_defaults(func=arguments.reporting_errors(cmd_pose_predict, PoseInputError))
