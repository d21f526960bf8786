"""``hrnet-fast bench``: every backend side by side with the reference, on the fusion ops and whole models.

Each row is timed until its median is known to a set precision or its time budget is spent
(:class:`~.timer.StopRule`; the defaults per device are :data:`STOP_RULES`), and each case's table
is printed as soon as it is measured, under a progress bar (tqdm; where stderr is not a terminal, a
plain line per step on stderr instead, so a log shows what a long run is doing).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import partial

from .. import arguments
from ..extras import MissingExtraError, require

DTYPES = ("float32", "float16", "bfloat16")
# --train: (head, arch, input size, batch) per device kind; batches sized for the device.
TRAIN_CASES = {
    "cuda": [("pose", "w32", (256, 192), 64), ("seg", "w48", (512, 1024), 8)],
    "cpu": [("pose", "w32", (256, 192), 4), ("seg", "w48", (256, 512), 1)],
}
# When to stop timing a row, per device kind and suite kind (StopRule fields): at least
# min_samples calls, then until the median's ~95% confidence interval is within +-precision,
# budget_s seconds are spent (after at least 3 calls), or max_samples calls are timed. Op calls take milliseconds, model
# calls up to seconds on a CPU; a GPU's noise is smaller, so it is asked for more precision.
STOP_RULES = {
    ("cpu", "op"): {"min_samples": 5, "max_samples": 500, "precision": 0.01, "budget_s": 3.0},
    ("cpu", "model"): {"min_samples": 5, "max_samples": 100, "precision": 0.02, "budget_s": 10.0},
    ("cuda", "op"): {"min_samples": 20, "max_samples": 2000, "precision": 0.005, "budget_s": 2.0},
    ("cuda", "model"): {"min_samples": 10, "max_samples": 500, "precision": 0.005, "budget_s": 5.0},
    # --suite seg: W48 on a 1024x2048 image takes seconds per call on a CPU
    ("cpu", "seg"): {"min_samples": 3, "max_samples": 10, "precision": 0.02, "budget_s": 20.0},
    ("cuda", "seg"): {"min_samples": 10, "max_samples": 200, "precision": 0.005, "budget_s": 5.0},
}
WARMUP = {("cpu", "op"): 3, ("cpu", "model"): 1, ("cuda", "op"): 3, ("cuda", "model"): 3}
# The names of hrnet_fast.bench.peers.PEERS, for --help without importing torch (a test keeps them equal).
PEER_NAMES = ("compile-freeze", "compile-ro-freeze", "compile-ma-freeze", "onnxruntime", "openvino")


class _UsageError(Exception):
    """A problem with the command line found before any work; printed as one line, exit status 2."""


def _suites(args: argparse.Namespace) -> list[str]:
    return ["train"] if args.train else args.suite


def _batch(args: argparse.Namespace) -> int:
    """The batch of the op and model cases (training cases have their own, :data:`TRAIN_CASES`)."""
    return args.batch or (32 if args.device.type == "cuda" else 8)


def _peer(text: str) -> str:
    """A peer engine of :data:`hrnet_fast.bench.peers.PEERS` (checked when parsed)."""
    from .peers import PEERS

    if text not in PEERS:
        raise argparse.ArgumentTypeError(f"unknown peer {text!r}; choose one of {', '.join(PEERS)}")
    return text


def _peers(args: argparse.Namespace) -> list[str]:
    """The peer engines the model suite times: ``--peers`` (none named: all of the device's), plus
    the torch.compile ones with ``--compile``."""
    from .peers import device_peers
    from .suites import COMPILE

    peers = device_peers(args.device) if args.peers == [] else list(args.peers or [])
    if args.compile:
        peers += [p for p in device_peers(args.device) if p.startswith(COMPILE)]
    return list(dict.fromkeys(peers))


def _load() -> float | None:
    """The machine's 1-minute load average (other work on a shared machine skews CPU timings)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _stop_rule(args: argparse.Namespace, device_kind: str, suite_kind: str):
    from .timer import StopRule

    if args.iters:
        return StopRule.fixed(args.iters)
    rule = STOP_RULES[device_kind, suite_kind]
    return StopRule(**(rule | ({"budget_s": args.budget} if args.budget else {})))


def _check_before_work(args: argparse.Namespace, backends: list[str]) -> None:
    """Everything that can fail without measuring: optional dependencies, files, backends."""
    from ..ops import available_backends, backend_status

    if args.plot:
        require("matplotlib", "plot", "--plot")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise _UsageError(f"{option} {path}: folder {folder} does not exist")
    if args.compare:
        from . import results

        try:
            results.load_json(args.compare)
        except ValueError as exc:
            raise _UsageError(f"--compare: {exc}") from None
    for name in backends:
        if name not in available_backends(args.device):
            raise _UsageError(f"--backend {name} cannot run on {args.device}: {backend_status()[name]}")


def _plan(args: argparse.Namespace, backends: list[str], copy_bw: float) -> list[tuple[int, Callable]]:
    """The cases to measure, in order, as (rows, measure): ``measure(progress=...)`` returns the case's results."""
    import torch

    from . import suites

    device, kind = args.device, args.device.type
    dtype = getattr(torch, args.dtype)
    batch = _batch(args)
    op = suites.Settings(device, dtype, args.channels_last, WARMUP[kind, "op"], _stop_rule(args, kind, "op"))
    model = suites.Settings(device, dtype, args.channels_last, WARMUP[kind, "model"], _stop_rule(args, kind, "model"))
    op_backends = [*backends, suites.COMPILE] if args.compile else backends
    model_backends = [*backends, *suites.model_peers(device, _peers(args), batch)]
    ops = {"backends": op_backends, "copy_bw": copy_bw}
    op_rows = len(dict.fromkeys(["reference", *op_backends]))

    suites_run = _suites(args)
    plan: list[tuple[int, Callable]] = []
    if "ops" in suites_run:
        plan += [
            (op_rows, partial(suites.bench_fusion_sums, args.arch, args.size, batch, op, mode="nearest", **ops)),
            (op_rows, partial(suites.bench_fusion_sums, args.arch, args.size, batch, op, mode="bilinear", **ops)),
            (op_rows, partial(suites.bench_seg_concat, args.arch, args.size, batch, op, **ops)),
            (op_rows, partial(suites.bench_fusion_step, args.arch, args.size, batch, op, **ops)),
        ]
    if "model" in suites_run:
        bench = partial(suites.bench_model, args.arch, args.head, args.size, batch, model, backends=model_backends)
        plan.append((len(dict.fromkeys(["reference", *model_backends])) + 1, bench))  # builds, then timing
    if "train" in suites_run:
        plan += [
            (
                len(dict.fromkeys(["reference", *backends])),
                partial(suites.bench_train, arch, head, size, args.batch or b, model, backends=backends),
            )
            for head, arch, size, b in TRAIN_CASES[kind]
        ]
    if "seg" in suites_run:
        from .seg import bench_seg_end_to_end, runner_names

        seg = suites.Settings(device, dtype, args.channels_last, 0, _stop_rule(args, kind, "seg"))
        plan.append((len(runner_names(seg, backends)), partial(bench_seg_end_to_end, seg, backends=backends)))
    return plan


def cmd_bench(args: argparse.Namespace) -> int:
    from ..progress import progress_bar
    from . import report, results, suites
    from .timer import copy_bandwidth

    backends = args.backend or suites.default_backends(args.device)
    try:
        _check_before_work(args, backends)
    except (MissingExtraError, _UsageError) as exc:
        print(f"hrnet-fast bench: error: {exc}", file=sys.stderr)
        return 2

    load_before = _load()
    meta = results.environment(args.device, " ".join(["hrnet-fast", *args.argv]))
    triton = meta["triton"] or "not installed"
    onednn = results.onednn_text(meta)
    print(f"{meta['device_name']} ({args.device}), torch {meta['torch']}, triton {triton}{onednn}, {meta['date']}")
    copy_bw = copy_bandwidth(args.device)
    meta["copy_gb_per_s"] = copy_bw / 1e9
    print(f"copy bandwidth (read + write) measured in this run: {copy_bw / 1e9:.1f} GB/s", flush=True)

    plan = _plan(args, backends, copy_bw)
    found: list[suites.Result] = []
    total, started = sum(rows for rows, _ in plan), 0
    with progress_bar(total, "row") as bar:

        def progress(what: str) -> None:
            nonlocal started
            started += 1
            bar.set_description_str(what, refresh=False)
            bar.update()
            if getattr(bar, "disable", True):  # no bar drawn (a log, or no tqdm): a plain line per step
                print(f"[{started}/{total}] {what}", file=sys.stderr, flush=True)

        for _, measure in plan:
            case = measure(progress=progress)
            found += case
            bar.write(f"\n{report.render_case(case)}", file=sys.stdout)
            sys.stdout.flush()
    print(f"\n{report.LEGEND}")
    meta["load"] = [load_before, _load()]

    if args.json:
        results.save_json(args.json, found, meta)
        print(f"\nresults written to {args.json}")
    if args.plot:
        report.plot(found, args.plot, _plot_title(args, meta))
        print(f"speedup chart written to {args.plot}")
    if args.compare:
        _, old = results.load_json(args.compare)
        regressions, matched = results.compare(old, found)
        print(f"\ncompared with {args.compare}: {matched} results in both runs, {len(regressions)} regressions")
        for r in regressions:
            print(f"  REGRESSION {r}")
        return 1 if regressions else 0
    return 0


def _plot_title(args: argparse.Namespace, meta: dict) -> str:
    batches = [_batch(args)] if {"ops", "model"} & set(_suites(args)) else []
    if "train" in _suites(args):
        batches += [args.batch or b for *_, b in TRAIN_CASES[args.device.type]]
    layout = "channels_last" if args.channels_last else "NCHW"
    return (
        f"hrnet-fast bench on {meta['device_name']} ({args.device}): {args.dtype}, "
        f"batch {'/'.join(map(str, dict.fromkeys(batches)))}, {layout}\n"
        "speedup over the reference (medians); whiskers: its ~95% interval"
    )


def add_commands(subparsers) -> None:
    """Add ``bench`` to the ``hrnet-fast`` subcommands."""
    bench = subparsers.add_parser(
        "bench",
        help="time HRNet and its fusion ops per backend against the reference",
        description="Side-by-side timings of every available backend against the reference "
        "(and torch.compile of it with --compile): the stage-4 fusion ops at the arch's real shapes, "
        "and a whole model forward. Each row is timed until its median is known to within 1-2% or "
        "its time budget is spent (or exactly --iters calls); a speedup whose ~95% interval holds 1 "
        "is marked 'within noise'. Errors are against the reference's output.",
    )
    bench.add_argument("--arch", default="w32", type=arguments.arch, help="official arch name (default w32)")
    bench.add_argument("--head", default="pose", type=arguments.head, help="pose, seg, cls, ... (default pose)")
    bench.add_argument("--batch", type=arguments.positive_int, help="default: 32 on CUDA, 8 on CPU")
    bench.add_argument("--size", type=arguments.size, default=(256, 192), help="input HxW (default 256x192)")
    bench.add_argument("--dtype", default="float32", choices=DTYPES)
    bench.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last tensors and weights (default; --no-channels-last: NCHW)",
    )
    bench.add_argument("--device", default="auto", type=arguments.device, help="auto, cpu, cuda, cuda:1, ...")
    bench.add_argument(
        "--backend",
        nargs="+",
        type=arguments.backend,
        metavar="NAME",
        help="backends to compare (default: all available)",
    )
    bench.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile of the reference (in the model suite: with freezing; on CUDA "
        "mode=reduce-overhead and max-autotune)",
    )
    bench.add_argument(
        "--peers",
        nargs="*",
        type=_peer,
        metavar="PEER",
        help="time other inference engines beside optimize() in the model suite: "
        f"{', '.join(PEER_NAMES)} (no name: all that apply to the device; missing ones are rows that say so)",
    )
    bench.add_argument(
        "--suite",
        nargs="+",
        choices=["ops", "model", "train", "seg"],
        default=["ops", "model"],
        help="seg: W48 seg on one 1024x2048 image end to end per backend and optimize() beside the "
        "official-style eager float32, with peak memory (opt-in: 2-5 minutes on a 2-core CPU)",
    )
    bench.add_argument(
        "--train",
        action="store_true",
        help="training steps (forward + backward + SGD) of pose W32 and seg W48 per backend, with "
        "activation memory; --dtype float16/bfloat16 means autocast (weights stay float32)",
    )
    bench.add_argument(
        "--iters", type=arguments.positive_int, help="time exactly this many calls per row (default: until precise)"
    )
    bench.add_argument(
        "--budget",
        type=arguments.positive_float,
        metavar="SECONDS",
        help="time budget per row (default: {} s for ops and {} s for models on a CPU, {} s and {} s on CUDA)".format(
            *(STOP_RULES[device, suite]["budget_s"] for device in ("cpu", "cuda") for suite in ("op", "model"))
        ),
    )
    bench.add_argument("--json", metavar="PATH", help="write the results and the environment as JSON")
    bench.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of the speedups (needs matplotlib)")
    bench.add_argument("--compare", metavar="OLD.json", help="flag regressions beyond noise against a saved run")
    bench.set_defaults(func=cmd_bench)
