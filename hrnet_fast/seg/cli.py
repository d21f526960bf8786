"""The segmentation subcommands of ``hrnet-fast`` (parsers here; torch is imported when a command runs).

hrnet-fast seg-predict IMAGE --checkpoint PTH [--out labels.png] [--overlay overlay.png] ...
hrnet-fast seg-eval --checkpoint PTH --images leftImg8bit/val --labels gtFine/val [--scales ...] [--flip] ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .. import arguments
from .errors import SegInputError

_DTYPES = ("float32", "float16", "bfloat16")


def _scales(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales are numbers such as 0.5,0.75,1.0, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text!r}")
    return values


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="seg checkpoint (.pth), e.g. the official W48 Cityscapes file"
    )
    parser.add_argument("--arch", type=arguments.arch, help="default: the arch the checkpoint was made for")
    parser.add_argument(
        "--device", default="auto", type=arguments.device, help="auto (cuda when available), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument("--dtype", default="float32", choices=_DTYPES)
    parser.add_argument("--backend", default="auto", type=arguments.backend_or_auto, help="auto (default) or a name")
    parser.add_argument("--optimize", action="store_true", help="run hrnet_fast.optimize() of the model")
    parser.add_argument(
        "--align-corners", action="store_true", help="the weights were trained with align_corners=True (HRNet-OCR)"
    )
    parser.add_argument(
        "--crop",
        type=arguments.size,
        default=(1024, 2048),
        help="sliding window HxW (default 1024x2048, official Cityscapes)",
    )
    parser.add_argument(
        "--stride", type=arguments.size, help="step between windows HxW (default: the crop, official Cityscapes)"
    )
    parser.add_argument(
        "--scales",
        type=_scales,
        nargs="+",
        default=[[1.0]],
        help="test scales, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (the official multi-scale test); default 1.0",
    )
    parser.add_argument("--flip", action="store_true", help="flip test: average with the mirrored image")
    parser.add_argument(
        "--base-size", type=arguments.positive_int, help="long side at scale 1 (default: each image's own)"
    )
    parser.add_argument(
        "--max-batch", type=arguments.positive_int, help="crops per model call (default: from free memory)"
    )


def _estimator(args: argparse.Namespace):
    import torch

    from ..models import optimize
    from .estimator import SegEstimator
    from .model import load_seg_model

    device, dtype = args.device, getattr(torch, args.dtype)
    backend = None if args.backend == "auto" else args.backend
    model = load_seg_model(
        args.checkpoint,
        args.arch,
        device=device,
        dtype=torch.float32 if args.optimize else dtype,
        backend=backend,
        align_corners=args.align_corners,
    )
    runner = optimize(model, dtype=dtype) if args.optimize else model
    scales = [s for group in args.scales for s in group]
    estimator = SegEstimator(
        runner,
        crop_size=args.crop,
        stride=args.stride,
        scales=scales,
        flip=args.flip,
        base_size=args.base_size,
        max_batch=args.max_batch,
    )
    stride = args.stride or args.crop
    print(
        f"HRNet-{model.arch.name} seg, {model.num_classes} classes, {args.dtype} on {device}, backend {args.backend}"
        f"{', optimize()' if args.optimize else ''}; crop {args.crop[0]}x{args.crop[1]}, stride "
        f"{stride[0]}x{stride[1]}, scales {','.join(f'{s:g}' for s in scales)}, {'flip' if args.flip else 'no flip'}",
        file=sys.stderr,
    )
    return estimator, model.num_classes


def _palette(args: argparse.Namespace, num_classes: int):
    from .draw import bit_spread_palette, default_palette, read_palette

    if args.palette is None:
        return default_palette(num_classes)
    if args.palette == "bit-spread":
        return bit_spread_palette(num_classes)
    return read_palette(args.palette, num_classes)


def cmd_seg_predict(args: argparse.Namespace) -> int:
    from .cityscapes import CLASS_NAMES, NUM_CLASSES, train_ids_to_label_ids
    from .dataset import read_image
    from .draw import label_image, overlay

    image = read_image(args.image)
    estimator, num_classes = _estimator(args)
    palette = _palette(args, num_classes)
    if args.label_ids and num_classes != NUM_CLASSES:
        raise SegInputError(f"--label-ids needs the 19 Cityscapes classes; the checkpoint predicts {num_classes}")
    start = time.perf_counter()
    labels = estimator.predict(image).cpu()
    batch = estimator.batch_size(*image.shape[-2:])
    seconds = time.perf_counter() - start
    print(f"{image.shape[1]}x{image.shape[2]} image in {seconds:.2f} s (up to {batch} crops per call)", file=sys.stderr)
    names = CLASS_NAMES if num_classes == NUM_CLASSES else [f"class {k}" for k in range(num_classes)]
    shares = labels.flatten().bincount(minlength=num_classes) / labels.numel()
    for k in shares.argsort(descending=True)[:5].tolist():
        if shares[k] > 0:
            print(f"{names[k]}: {100 * float(shares[k]):.1f}% of the pixels")
    stem = os.path.splitext(args.image)[0]
    out = args.out or f"{stem}_seg.png"
    overlay_path = args.overlay or f"{os.path.splitext(out)[0]}_overlay.png"
    saved = train_ids_to_label_ids(labels) if args.label_ids else labels
    label_image(saved, palette).save(out, format="PNG")
    overlay(image, labels, palette, args.alpha).save(overlay_path, format="PNG")
    ids = "Cityscapes label ids" if args.label_ids else "train ids"
    print(f"wrote {out} ({ids}) and {overlay_path}", file=sys.stderr)
    return 0


def cmd_seg_eval(args: argparse.Namespace) -> int:
    from ..progress import progress_bar
    from .cityscapes import CLASS_NAMES, NUM_CLASSES
    from .dataset import find_pairs
    from .evaluation import evaluate
    from .metrics import format_stats

    pairs = find_pairs(args.images, args.labels, args.label_kind)
    estimator, num_classes = _estimator(args)
    if args.label_kind == "labelids" and num_classes != NUM_CLASSES:
        raise SegInputError(
            f"Cityscapes label ids map to {NUM_CLASSES} train ids, but the checkpoint predicts {num_classes} "
            "classes; for other sets pass --label-kind trainids with label maps of train ids"
        )
    names = CLASS_NAMES if num_classes == NUM_CLASSES else [f"class {k}" for k in range(num_classes)]
    print(f"{len(pairs)} images under {args.images}", file=sys.stderr)
    start = time.perf_counter()
    with progress_bar(len(pairs), "image", enabled=not args.no_progress) as bar:

        def report_skip(path: str, why: str) -> None:
            bar.write(f"warning: skipped {path}: {why}", file=sys.stderr)

        run = evaluate(
            estimator,
            pairs,
            num_classes=num_classes,
            label_kind=args.label_kind,
            workers=args.workers,
            on_image=bar.update,
            on_skip=report_skip,
        )
    seconds = time.perf_counter() - start
    print(f"{run.images} images in {seconds:.1f} s ({run.images / seconds:.2f} images/s)", file=sys.stderr)
    if run.skipped:
        print(f"warning: {len(run.skipped)} images skipped (could not be read)", file=sys.stderr)
    print(format_stats(run.stats, names))
    if args.stats:
        stats = run.stats.as_dict(names) | {
            "images": run.images,
            "skipped": run.skipped,
            "scales": estimator.scales,
            "flip": estimator.flip,
        }
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=1)
        print(f"wrote {args.stats}", file=sys.stderr)
    return 0


def add_commands(subparsers) -> None:
    """Add ``seg-predict`` and ``seg-eval`` to the ``hrnet-fast`` subcommands."""
    pr = subparsers.add_parser("seg-predict", help="label map and colour overlay of one image (seg checkpoint)")
    pr.add_argument("image", help="an image file Pillow can read")
    _add_model_arguments(pr)
    pr.add_argument("--out", help="label-map PNG of class ids (default: <image stem>_seg.png)")
    pr.add_argument("--overlay", help="colour overlay PNG (default: <out stem>_overlay.png)")
    pr.add_argument(
        "--palette",
        help="'bit-spread' or a JSON file of [r, g, b] per class (default: Cityscapes for 19 classes, else bit-spread)",
    )
    pr.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5)")
    pr.add_argument("--label-ids", action="store_true", help="save Cityscapes label ids instead of train ids")
    pr.set_defaults(func=arguments.reporting_errors(cmd_seg_predict, SegInputError))

    ev = subparsers.add_parser("seg-eval", help="mIoU of a seg checkpoint on a labelled set (Cityscapes format)")
    _add_model_arguments(ev)
    ev.add_argument("--images", required=True, help="images folder, e.g. leftImg8bit/val")
    ev.add_argument("--labels", required=True, help="label maps folder, e.g. gtFine/val")
    ev.add_argument(
        "--label-kind",
        choices=["labelids", "trainids"],
        default="labelids",
        help="labelids: Cityscapes *_gtFine_labelIds.png (default); trainids: maps of class ids 0..K-1, 255 ignored",
    )
    ev.add_argument("--stats", help="write the statistics (per-class IoU, mIoU, accuracies) as JSON here")
    ev.add_argument("--workers", type=arguments.positive_int, default=4, help="image decoding threads (default 4)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=arguments.reporting_errors(cmd_seg_eval, SegInputError))
