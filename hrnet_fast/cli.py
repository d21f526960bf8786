"""The ``hrnet-fast`` command: one subcommand table, filled by the modules in :data:`COMMAND_MODULES`.

hrnet-fast bench          time HRNet and its fusion ops per backend against the reference, side by side
hrnet-fast pose-eval      COCO keypoint AP/AR of a pose checkpoint
hrnet-fast pose-predict   draw the skeletons a pose checkpoint finds in an image, a video or an image folder
hrnet-fast seg-predict    label map and colour overlay of one image (seg checkpoint)
hrnet-fast seg-eval       mIoU of a seg checkpoint on a labelled set (Cityscapes format)

Adding subcommands: write a module with ``add_commands(subparsers)`` that adds each subcommand
with ``subparsers.add_parser(name, help=...)`` and ``set_defaults(func=command)``, where
``command(args) -> int`` returns the exit status, and add the module's name to
:data:`COMMAND_MODULES`. So that ``hrnet-fast --help`` stays instant, importing the module (and its
package's ``__init__``, see :mod:`hrnet_fast._lazy`) must not import torch or triton (seconds):
the command functions import what they need, and choices that need the package's tables (archs,
backends, devices) are ``type=`` functions from :mod:`hrnet_fast.arguments`, which argparse calls
only on values being parsed. ``tests/test_cli.py`` checks this for every module listed here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("hrnet_fast.bench.cli", "hrnet_fast.pose.cli", "hrnet_fast.seg.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrnet-fast", description="HRNet with fused fusion kernels: benchmarks, pose estimation and segmentation."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
