"""The ``hrnet-fast`` command.

hrnet-fast bench   time HRNet and its fusion ops per backend against the reference, side by side
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .bench import report, results, suites
from .bench.peers import PEERS, device_peers
from .bench.seg import bench_seg_end_to_end, runner_names
from .bench.timer import copy_bandwidth
from .models import ARCHS, HEADS
from .ops import known_backends
from .pose.cli import add_commands as add_pose_commands
from .seg.cli import add_commands as add_seg_commands

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# --train: (head, arch, input size, batch) per device kind; batches sized for the device.
TRAIN_CASES = {
    "cuda": [("pose", "w32", (256, 192), 64), ("seg", "w48", (512, 1024), 8)],
    "cpu": [("pose", "w32", (256, 192), 4), ("seg", "w48", (256, 512), 1)],
}


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x192 (height x width), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"hrnet-fast: --device {text}: this machine has no CUDA GPU")
    return device


class Progress:
    """One overwritten status line on stderr: [step/total] what is running."""

    def __init__(self, total: int):
        self.total, self.step = total, 0

    def __call__(self, message: str) -> None:
        self.step += 1
        print(f"\r\033[K[{self.step}/{self.total}] {message}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        print("\r\033[K", end="", file=sys.stderr, flush=True)


def _peers(args: argparse.Namespace, device: torch.device) -> list[str]:
    """The peer engines the model suite times: ``--peers`` (none named: all of the device's), plus
    the torch.compile ones with ``--compile``."""
    peers = device_peers(device) if args.peers == [] else list(args.peers or [])
    if args.compile:
        peers += [p for p in device_peers(device) if p.startswith(suites.COMPILE)]
    return list(dict.fromkeys(peers))


def _load() -> float | None:
    """The machine's 1-minute load average (other work on a shared machine skews CPU timings)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _seg_predictor(model: torch.nn.Module, size: tuple[int, int]):
    from .seg.estimator import SegEstimator

    return SegEstimator(model, crop_size=size, max_batch=1).predict


def cmd_bench(args: argparse.Namespace) -> int:
    device = _device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (32 if cuda else 8)
    backends = args.backend or suites.default_backends(device)
    op_backends = [*backends, suites.COMPILE] if args.compile else backends
    model_backends = [*backends, *suites.model_peers(device, _peers(args, device))]
    op_settings = suites.Settings(
        device, DTYPES[args.dtype], args.channels_last, warmup=3, iters=args.iters or (50 if cuda else 10)
    )
    model_settings = suites.Settings(
        device, DTYPES[args.dtype], args.channels_last, warmup=3 if cuda else 1, iters=args.iters or (20 if cuda else 7)
    )
    suites_run = ["train"] if args.train else args.suite
    train_cases = TRAIN_CASES["cuda" if cuda else "cpu"]
    steps = 1 + len(dict.fromkeys(["reference", *op_backends])) * 3 * ("ops" in suites_run)
    steps += (len(dict.fromkeys(["reference", *model_backends])) + 1) * ("model" in suites_run)
    seg_settings = suites.Settings(
        device, DTYPES[args.dtype], args.channels_last, warmup=0, iters=args.iters or (10 if cuda else 2)
    )
    steps += len(runner_names(seg_settings, backends)) * ("seg" in suites_run)
    progress = Progress(
        steps + len(dict.fromkeys(["reference", *backends])) * len(train_cases) * ("train" in suites_run)
    )

    load_before = _load()
    progress("copy bandwidth")
    copy_bw = copy_bandwidth(device)
    found: list[suites.Result] = []
    ops = {"backends": op_backends, "progress": progress, "copy_bw": copy_bw}
    if "ops" in suites_run:
        for mode in ("nearest", "bilinear"):
            found += suites.bench_fusion_sums(args.arch, args.size, batch, op_settings, mode=mode, **ops)
        found += suites.bench_seg_concat(args.arch, args.size, batch, op_settings, **ops)
    if "model" in suites_run:
        found += suites.bench_model(
            args.arch, args.head, args.size, batch, model_settings, backends=model_backends, progress=progress
        )
    if "train" in suites_run:
        for head, arch, size, default_batch in train_cases:
            found += suites.bench_train(
                arch, head, size, args.batch or default_batch, model_settings, backends=backends, progress=progress
            )
    if "seg" in suites_run:
        found += bench_seg_end_to_end(seg_settings, backends=backends, predictor=_seg_predictor, progress=progress)
    progress.done()

    meta = results.environment(device, " ".join(["hrnet-fast", *args.argv])) | {
        "copy_gb_per_s": copy_bw / 1e9,
        "load": [load_before, _load()],
    }
    print(f"{meta['device_name']} ({device}), torch {meta['torch']}, triton {meta['triton']}, {meta['date']}")
    print(f"copy bandwidth (read + write) measured in this run: {copy_bw / 1e9:.1f} GB/s\n")
    print(report.render(found))
    if args.json:
        results.save_json(args.json, found, meta)
        print(f"\nresults written to {args.json}")
    if args.plot:
        report.plot(found, args.plot)
        print(f"speedup chart written to {args.plot}")
    if args.compare:
        _, old = results.load_json(args.compare)
        regressions, matched = results.compare(old, found)
        print(f"\ncompared with {args.compare}: {matched} results in both runs, {len(regressions)} regressions")
        for r in regressions:
            print(f"  REGRESSION {r}")
        return 1 if regressions else 0
    return 0


def add_bench_command(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="time HRNet and its fusion ops per backend against the reference",
        description="Side-by-side timings of every available backend against the reference "
        "(and torch.compile of it with --compile): the stage-4 fusion ops at the arch's real shapes, "
        "and a whole model forward. Errors are against the reference's output.",
    )
    bench.add_argument("--arch", default="w32", choices=list(ARCHS))
    bench.add_argument("--head", default="pose", choices=list(HEADS))
    bench.add_argument("--batch", type=_positive, help="default: 32 on CUDA, 8 on CPU")
    bench.add_argument("--size", type=_size, default=(256, 192), help="input HxW (default 256x192)")
    bench.add_argument("--dtype", default="float32", choices=list(DTYPES))
    bench.add_argument("--channels-last", action="store_true", help="channels_last tensors and weights")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    bench.add_argument("--backend", nargs="+", choices=list(known_backends()), help="default: all available")
    bench.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile of the reference (in the model suite: with freezing; on CUDA "
        "mode=reduce-overhead and max-autotune)",
    )
    bench.add_argument(
        "--peers",
        nargs="*",
        choices=list(PEERS),
        metavar="PEER",
        help="time other inference engines beside optimize() in the model suite: "
        f"{', '.join(PEERS)} (no name: all that apply to the device; missing ones are rows that say so)",
    )
    bench.add_argument(
        "--suite",
        nargs="+",
        choices=["ops", "model", "train", "seg"],
        default=["ops", "model"],
        help="seg: W48 seg on one 1024x2048 image end to end per backend and optimize(), with peak memory "
        "(opt-in: 2-5 minutes on a 2-core CPU)",
    )
    bench.add_argument(
        "--train",
        action="store_true",
        help="training steps (forward + backward + SGD) of pose W32 and seg W48 per backend, with "
        "activation memory; --dtype float16/bfloat16 means autocast (weights stay float32)",
    )
    bench.add_argument("--iters", type=_positive, help="timed calls per case (default by device and suite)")
    bench.add_argument("--json", metavar="PATH", help="write the results and the environment as JSON")
    bench.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of the speedups (matplotlib)")
    bench.add_argument("--compare", metavar="OLD.json", help="flag regressions beyond noise against a saved run")
    bench.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrnet-fast", description="HRNet with fused fusion kernels: benchmarks and pose estimation."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_command(sub)
    add_pose_commands(sub)
    add_seg_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
