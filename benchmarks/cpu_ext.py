"""The C++ extension on the CPU (backend ``cpp``) against the reference, side by side in one run.

1. The fused op at HRNet-W32 stage-4 branch-0 shapes (batch 8, 256x192 input): base (8, 32, 64, 48)
   plus the three lower branches already projected to 32 channels, (8, 32, 32, 24), (8, 32, 16, 12),
   (8, 32, 8, 6); fp32, nearest and bilinear, NCHW and channels_last.
2. The whole HRNet-W32 pose forward (batch 8, 256x192, fp32, eval) per backend, and the share of the
   reference's time spent in the fusion step (the MultiResolutionFusion modules) and, within it, in
   the upsample + sum + ReLU that the fused op replaces.

Calls of the two backends alternate (A B A B ...), so load from other processes hits both alike;
medians (and minima) are reported. Writes cpu_ext.json and cpu_ext.md to --out when given.

    python benchmarks/cpu_ext.py [--threads N] [--op-reps 60] [--model-reps 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

import hrnet_fast
from hrnet_fast import HRNet
from hrnet_fast.bench.report import table
from hrnet_fast.bench.results import add_report_arguments, environment, write_report
from hrnet_fast.nn import MultiResolutionFusion, fusion
from hrnet_fast.ops import upsample_sum

BASE = (8, 32, 64, 48)
LOW = [(8, 32, 32, 24), (8, 32, 16, 12), (8, 32, 8, 6)]
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
BACKENDS = ("reference", "cpp")


def cpp_run_setup(script: str, argv: list[str] | None, threads: int | None, rounds: str) -> tuple[dict, str, float]:
    """What a script timing the cpp backend's CPU kernels starts with: torch's intra-op threads set
    (``threads``; None keeps torch's choice), the backend checked (exit with its reason when it is
    unavailable), the run's environment with the script's command line, a one-line setup (device,
    threads, torch, ISA, then ``rounds``) and the load average before the run (other processes
    share the cores: the script records it beside the one after, as ``env["load"]``)."""
    if threads:
        torch.set_num_threads(threads)
    reason = hrnet_fast.backend_status()["cpp"]
    if reason is not None:
        raise SystemExit(f"backend cpp unavailable: {reason}")
    env = environment(torch.device("cpu"), " ".join([f"python benchmarks/{script}", *(argv or sys.argv[1:])]))
    setup = f"{env['device_name']}, {torch.get_num_threads()} threads, torch {torch.__version__}; {rounds}"
    return env, setup, os.getloadavg()[0]


def alternate(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each function over ``reps`` rounds, each round calling every function
    once: in the given order in even rounds, in reverse in odd ones. Whatever a call leaves in the
    caches for the next (inputs or weights two runners share) then favours each runner alike; with
    one fixed order the later of two calls on the same weights ran 5-20% faster on the 2-core EPYC."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    forward = list(fns.items())
    for r in range(reps):
        for name, fn in forward if r % 2 == 0 else forward[::-1]:
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def summary_row(samples: dict[str, list[float]], outputs: dict[str, object], reference: object, base: dict) -> dict:
    """``base`` plus, per runner, its median and minimum in ms (``<name>_ms``, ``<name>_min_ms``) and
    its largest difference from ``reference`` (``<name>_err``; tensors or lists of them), and the
    last runner's speedup over each other one (``<last>_vs_<name>``, medians)."""
    med = {k: statistics.median(v) for k, v in samples.items()}
    ref = reference if isinstance(reference, list | tuple) else [reference]
    row = dict(base)
    for name, seconds in med.items():
        row[f"{name}_ms"] = seconds * 1e3
        row[f"{name}_min_ms"] = min(samples[name]) * 1e3
        out = outputs[name] if isinstance(outputs[name], list | tuple) else [outputs[name]]
        row[f"{name}_err"] = max((a.float() - b.float()).abs().max().item() for a, b in zip(out, ref, strict=True))
    last = list(med)[-1]
    for name in list(med)[:-1]:
        row[f"{last}_vs_{name}"] = med[name] / med[last]
    return row


def runner_columns(*runners: tuple[str, str]) -> list[tuple[str, str, str]]:
    """The table columns of a :func:`summary_row` over batches and dtypes for ``(name, label)``
    runners: each one's median and minimum, the last one's speedup over each other one, and each
    later one's difference from the first one's output."""
    (_, first_label), *later = runners
    last, last_label = runners[-1]
    return [
        ("batch", "batch", "d"),
        ("dtype", "dtype", "s"),
        *[(f"{name}_ms", f"{label} ms", ".2f") for name, label in runners],
        *[(f"{name}_min_ms", f"{label} min", ".2f") for name, label in runners],
        *[(f"{last}_vs_{name}", f"{last_label} vs {label}", ".3f") for name, label in runners[:-1]],
        *[(f"{name}_err", f"max |{label} - {first_label}|", ".1e") for name, label in later],
    ]


def bench_op(reps: int) -> list[dict]:
    rows = []
    for fmt_name, fmt in FORMATS.items():
        base = torch.randn(BASE).contiguous(memory_format=fmt)
        low = [torch.randn(s).contiguous(memory_format=fmt) for s in LOW]
        for mode in ("nearest", "bilinear"):
            fns = {b: functools.partial(upsample_sum, base, (), low, mode=mode, backend=b) for b in BACKENDS}
            with torch.inference_mode():
                err = (fns["cpp"]() - fns["reference"]()).abs().max().item()
                samples = alternate(fns, reps)
            ref, fused = statistics.median(samples["reference"]), statistics.median(samples["cpp"])
            rows.append(
                {
                    "layout": fmt_name,
                    "mode": mode,
                    "reference_ms": ref * 1e3,
                    "cpp_ms": fused * 1e3,
                    "reference_min_ms": min(samples["reference"]) * 1e3,
                    "cpp_min_ms": min(samples["cpp"]) * 1e3,
                    "speedup": ref / fused,
                    "max_abs_err": err,
                }
            )
    return rows


def fusion_share(model: torch.nn.Module, x: torch.Tensor, reps: int) -> dict:
    """Seconds per forward inside MultiResolutionFusion modules and inside their upsample_sum calls."""
    spent = {"fusion": 0.0, "upsample_sum": 0.0}
    starts: dict[int, float] = {}

    def enter(module, args):
        starts[id(module)] = time.perf_counter()

    def leave(module, args, out):
        spent["fusion"] += time.perf_counter() - starts.pop(id(module))

    def timed_upsample_sum(*args, **kwargs):
        start = time.perf_counter()
        out = upsample_sum(*args, **kwargs)
        spent["upsample_sum"] += time.perf_counter() - start
        return out

    fusions = [m for m in model.modules() if isinstance(m, MultiResolutionFusion)]
    handles = [m.register_forward_pre_hook(enter) for m in fusions]
    handles += [m.register_forward_hook(leave) for m in fusions]
    fusion.upsample_sum = timed_upsample_sum
    try:
        total = 0.0
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            total += time.perf_counter() - start
    finally:
        fusion.upsample_sum = upsample_sum
        for h in handles:
            h.remove()
    return {"forward_ms": total / reps * 1e3, **{f"{k}_ms": v / reps * 1e3 for k, v in spent.items()}}


def run_model(model: torch.nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    model.backend = backend
    return model(x)


def bench_model(reps: int) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    rows, share = [], {}
    for fmt_name, fmt in FORMATS.items():
        model = HRNet("w32", head="pose").eval().to(memory_format=fmt)
        x = torch.randn(8, 3, 256, 192).contiguous(memory_format=fmt)

        fns = {b: functools.partial(run_model, model, x, b) for b in BACKENDS}
        with torch.inference_mode():
            err = (fns["cpp"]() - fns["reference"]()).abs().max().item()
            samples = alternate(fns, reps, warmup=1)
            model.backend = "reference"
            share[fmt_name] = fusion_share(model, x, max(2, reps // 2))
        ref, fused = statistics.median(samples["reference"]), statistics.median(samples["cpp"])
        rows.append(
            {
                "layout": fmt_name,
                "reference_ms": ref * 1e3,
                "cpp_ms": fused * 1e3,
                "reference_img_s": 8 / ref,
                "cpp_img_s": 8 / fused,
                "speedup": ref / fused,
                "max_abs_err": err,
            }
        )
    return rows, share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--op-reps", type=int, default=60)
    parser.add_argument("--model-reps", type=int, default=5)
    add_report_arguments(parser, "cpu_ext")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if hrnet_fast.backend_status()["cpp"] is not None:
        raise SystemExit(f"backend cpp unavailable: {hrnet_fast.backend_status()['cpp']}")
    cpu = f"{platform.processor() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()})"
    threads = torch.get_num_threads()
    header = f"torch {torch.__version__}, {threads} threads, {cpu}; medians of alternating calls"
    print(header)
    op_rows = bench_op(args.op_reps)
    op_columns = [
        ("layout", "layout", "s"),
        ("mode", "mode", "s"),
        ("reference_ms", "reference ms", ".2f"),
        ("cpp_ms", "cpp ms", ".2f"),
        ("reference_min_ms", "ref min", ".2f"),
        ("cpp_min_ms", "cpp min", ".2f"),
        ("speedup", "speedup", ".1f"),
        ("max_abs_err", "max |err|", ".1e"),
    ]
    op_table = table(op_rows, op_columns)
    print(f"\nfused op, W32 stage-4 branch-0 shapes, batch 8, fp32 ({args.op_reps} rounds)\n{op_table}")
    model_rows, share = bench_model(args.model_reps)
    model_columns = [
        ("layout", "layout", "s"),
        ("reference_ms", "reference ms", ".0f"),
        ("cpp_ms", "cpp ms", ".0f"),
        ("reference_img_s", "ref img/s", ".2f"),
        ("cpp_img_s", "cpp img/s", ".2f"),
        ("speedup", "speedup", ".3f"),
        ("max_abs_err", "max |err|", ".1e"),
    ]
    model_table = table(model_rows, model_columns)
    share_rows = [
        {
            "layout": k,
            **v,
            "fusion_share": v["fusion_ms"] / v["forward_ms"],
            "op_share": v["upsample_sum_ms"] / v["forward_ms"],
        }
        for k, v in share.items()
    ]
    share_columns = [
        ("layout", "layout", "s"),
        ("forward_ms", "forward ms", ".0f"),
        ("fusion_ms", "fusion step ms", ".0f"),
        ("fusion_share", "share", ".1%"),
        ("upsample_sum_ms", "upsample+sum+relu ms", ".0f"),
        ("op_share", "share", ".1%"),
    ]
    share_table = table(share_rows, share_columns)
    print(f"\nHRNet-W32 pose forward, batch 8, 256x192, fp32 ({args.model_reps} rounds)\n{model_table}")
    print(f"\nwhere the reference forward spends its time\n{share_table}")
    if args.out:
        results = {"setup": header, "op": op_rows, "model": model_rows, "reference_time_split": share_rows}
        env = environment(torch.device("cpu"), " ".join(["python benchmarks/cpu_ext.py", *(argv or sys.argv[1:])]))
        write_report(
            args.out,
            args.name,
            results,
            "C++ extension, backend cpp (benchmarks/cpu_ext.py)",
            env,
            f"\n{header}\n\n```\n{op_table}\n```\n\n```\n{model_table}\n```\n\n```\n{share_table}\n```\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
