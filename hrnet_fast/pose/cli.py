"""The pose subcommands of ``hrnet-fast``.

hrnet-fast pose-eval --checkpoint PTH --ann person_keypoints_val2017.json --images val2017/
                     [--boxes detections.json] [--out results.json] [--stats stats.json] ...
hrnet-fast pose-predict IMAGE --checkpoint PTH [--boxes detections.json] --out drawing.png ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from PIL import Image

from ..models import ARCHS, CheckpointError
from ..ops import BackendUnavailableError, known_backends
from .coco import (
    evaluate_keypoints,
    format_stats,
    ground_truth_boxes,
    load_detections,
    load_keypoint_annotations,
    write_results,
)
from .dataset import boxes_for_dataset, predict_dataset
from .draw import KEYPOINT_THRESHOLD, draw_poses
from .errors import PoseInputError
from .inputs import is_frames_input
from .model import load_pose_model
from .pipeline import PoseEstimator, rescore_and_suppress
from .preprocess import read_image
from .progress import ProgressBar
from .video_cli import add_video_arguments, run_video

_DTYPES = ("float32", "float16", "bfloat16")
_SHOWN_SKIPS = 5


def _input_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 256x192, got {text!r}")
    return int(parts[0]), int(parts[1])


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="pose checkpoint (.pth), e.g. the official W32 file")
    parser.add_argument("--arch", choices=list(ARCHS), help="default: the arch the checkpoint was made for")
    parser.add_argument("--size", type=_input_size, default=(256, 192), help="model input HxW (default 256x192)")
    parser.add_argument("--batch", type=int, default=32, help="person crops per model call (default 32)")
    parser.add_argument("--backend", default="auto", choices=["auto", *known_backends()])
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=_DTYPES)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True, help="flip test (default: on)")
    parser.add_argument("--dark", action="store_true", help="DARK decoding instead of the quarter-pixel rule")
    parser.add_argument("--min-box-score", type=float, default=0.0, help="ignore boxes scoring lower (default 0)")


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise PoseInputError(f"--device {text!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PoseInputError(f"--device {text}: no CUDA GPU is available here")
    return device


def _estimator(args: argparse.Namespace) -> PoseEstimator:
    if args.batch < 1:
        raise PoseInputError(f"--batch must be positive, got {args.batch}")
    device = _device(args.device)
    model = load_pose_model(
        args.checkpoint, args.arch, device=device, dtype=getattr(torch, args.dtype), backend=args.backend
    )
    h, w = args.size
    flip = "flip test" if args.flip else "no flip test"
    decoding = "DARK" if args.dark else "quarter-pixel"
    print(
        f"HRNet-{model.arch.name} pose, input {h}x{w}, {args.dtype}, on {device}, backend {args.backend}; "
        f"{flip}, {decoding} decoding",
        file=sys.stderr,
    )
    return PoseEstimator(model, args.size, flip=args.flip, dark=args.dark, batch_size=args.batch)


def cmd_pose_eval(args: argparse.Namespace) -> int:
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

    bar = ProgressBar(len(boxes), "images", enabled=not args.no_progress)
    skips: list[str] = []

    def report_skip(image_id: int, why: str) -> None:
        skips.append(why)
        if len(skips) <= _SHOWN_SKIPS:
            end_of_bar = "\n" if bar.enabled else ""
            print(f"{end_of_bar}warning: skipped image {image_id}: {why}", file=sys.stderr)

    start = time.perf_counter()
    run = predict_dataset(
        estimator, coco, boxes, args.images, workers=args.workers, on_image=bar.update, on_skip=report_skip
    )
    seconds = time.perf_counter() - start
    bar.close()
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


def _boxes_for_image(args: argparse.Namespace, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def cmd_pose_predict(args: argparse.Namespace) -> int:
    if is_frames_input(args.image):
        return run_video(args, _estimator)
    image = read_image(args.image)
    boxes, box_scores = _boxes_for_image(args, image.shape[2], image.shape[1])
    poses, scores = rescore_and_suppress(_estimator(args).estimate(image, boxes), box_scores)
    for k, (person, score) in enumerate(zip(poses.keypoints, scores, strict=True)):
        shown = int((person[:, 2] > args.threshold).sum())
        print(f"person {k}: score {score:.3f}, {shown}/{len(person)} joints above {args.threshold}")
    drawing = draw_poses(Image.fromarray(image.permute(1, 2, 0).numpy()), poses.keypoints, args.threshold)
    out = args.out or f"{os.path.splitext(args.image)[0]}_pose.png"
    drawing.save(out, format="PNG")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _reporting_errors(command):
    """Run ``command(args)``; print input errors as one line (exit status 2) instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (PoseInputError, FileNotFoundError, CheckpointError, BackendUnavailableError) as exc:
            print(f"hrnet-fast {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def add_commands(subparsers) -> None:
    """Add ``pose-eval`` and ``pose-predict`` to the ``hrnet-fast`` subcommands."""
    ev = subparsers.add_parser("pose-eval", help="COCO keypoint AP/AR of a pose checkpoint (pycocotools)")
    _add_model_arguments(ev)
    ev.add_argument("--ann", required=True, help="COCO person_keypoints_*.json annotation file")
    ev.add_argument("--images", required=True, help="folder holding the annotation's image files")
    ev.add_argument("--boxes", help="COCO detection results JSON (default: ground-truth person boxes)")
    ev.add_argument("--out", help="write the keypoint results JSON (official format) here")
    ev.add_argument("--stats", help="write the ten AP/AR stats as JSON here")
    ev.add_argument("--workers", type=int, default=4, help="image decoding threads (default 4)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_reporting_errors(cmd_pose_eval))

    pr = subparsers.add_parser(
        "pose-predict", help="draw the skeletons a pose checkpoint finds in an image, a video or an image folder"
    )
    pr.add_argument("image", help="an image file Pillow can read, a video file or a folder of images")
    _add_model_arguments(pr)
    pr.add_argument("--boxes", help="COCO detection results JSON (default: the whole image is one person box)")
    pr.add_argument("--image-id", type=int, help="the image's id in --boxes (default: from a numeric file name)")
    pr.add_argument(
        "--out",
        help="a PNG for an image; for a video or folder a video file (.mp4, .mkv, ...) or a folder of PNG frames "
        "(default beside the input: <stem>_pose.png, <stem>_pose.mp4, <folder>_pose/)",
    )
    pr.add_argument(
        "--threshold",
        type=float,
        default=KEYPOINT_THRESHOLD,
        help="draw joints scoring above this (default 0.3)",
    )
    add_video_arguments(pr)
    pr.set_defaults(func=_reporting_errors(cmd_pose_predict))
