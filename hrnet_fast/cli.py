"""The ``hrnet-fast`` command.

hrnet-fast bench [--arch w32] [--head pose] [--batch 1] [--size 256x192] [--dtype float32]
                 [--device auto] [--backend NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from .bench.models import bench_model
from .bench.report import table
from .models import ARCHS, HEADS
from .ops import known_backends
from .pose.cli import add_commands as add_pose_commands

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like 256x192 (height x width), got {text!r}"
        ) from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(text)


def _progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    device = _device(args.device)
    h, w = args.size
    print(f"HRNet-{args.arch} {args.head}, batch {args.batch}, {h}x{w}, {args.dtype}, on {device}")
    results = bench_model(
        args.arch,
        args.head,
        batch=args.batch,
        size=args.size,
        dtype=DTYPES[args.dtype],
        device=device,
        backends=args.backend,
        warmup=args.warmup,
        iters=args.iters,
        progress=_progress,
    )
    columns = [
        ("backend", "backend", "s"),
        ("ms", "ms/batch", ".2f"),
        ("img_per_s", "img/s", ".1f"),
        ("speedup", "vs reference", ".2f"),
        ("max_abs_err", "max |err|", ".2e"),
    ]
    print(table([dataclasses.asdict(r) for r in results], columns))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrnet-fast", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="time HRNet per backend against the reference")
    bench.add_argument("--arch", default="w32", choices=list(ARCHS))
    bench.add_argument("--head", default="pose", choices=list(HEADS))
    bench.add_argument("--batch", type=int, default=1)
    bench.add_argument("--size", type=_size, default=(256, 192), help="input HxW (default 256x192)")
    bench.add_argument("--dtype", default="float32", choices=list(DTYPES))
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    bench.add_argument("--backend", nargs="+", choices=list(known_backends()), help="default: all available")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--iters", type=int, default=5)
    bench.set_defaults(func=cmd_bench)
    add_pose_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
