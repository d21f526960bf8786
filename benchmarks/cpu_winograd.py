"""``winograd_conv`` on the CPU (the cpp backend's Winograd F(2x2, 3x3) kernel), side by side in one
run with the direct convolutions it replaces in ``optimize()``.

1. Per 3x3 block conv of HRNet-W32's stage-4 branches (256x192 input: 32 ... 256 channels at 64x48
   ... 8x6), batch 1, 2 and 8, fp32 channels_last, conv + bias + residual + ReLU:
     reference   F.conv2d + add + ReLU (eager PyTorch)
     onednn      oneDNN's fused conv with the weight prepacked (what optimize() ran before)
     winograd    winograd_conv on cpp
   Each call takes the next of 16 distinct weights, so weights come from memory as in a forward
   (a conv whose weights stay in cache would flatter Winograd's 16/9 larger transformed weights).
2. The whole HRNet-W32 pose forward (256x192, fp32 channels_last) under ``optimize()`` with
   Winograd on and off (``FoldedConv``'s ``WINOGRAD_DTYPES`` emptied), batch 1 and 8.

Calls alternate (A B C A B C ...) so load from other processes hits all alike; medians (and minima)
over the rounds; errors are the largest deviation from float64. Writes cpu_winograd.json and
cpu_winograd.md to --out when given.

    python benchmarks/cpu_winograd.py [--threads N] [--conv-reps 30] [--model-reps 9] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
from collections.abc import Callable, Iterator

import torch
from cpu_ext import alternate, cpp_run_setup

from hrnet_fast import HRNet, optimize
from hrnet_fast.bench.report import table
from hrnet_fast.bench.results import add_report_arguments, write_report
from hrnet_fast.bench.shapes import branch_sizes, stage_widths
from hrnet_fast.nn import folded
from hrnet_fast.ops import conv_bias_act, winograd_conv, winograd_conv_reference, winograd_panel
from hrnet_fast.ops.conv_act import prepack_weight
from hrnet_fast.testing import randomize_batchnorm_

WEIGHTS = 16  # distinct weights per conv shape, taken in turn
CONV_BATCHES = (1, 2, 8)
MODEL_BATCHES = (1, 8)


@contextlib.contextmanager
def winograd_off() -> Iterator[None]:
    """optimize() runs every conv through oneDNN, as it did before winograd_conv."""
    dtypes = folded.WINOGRAD_DTYPES
    folded.WINOGRAD_DTYPES = ()
    try:
        yield
    finally:
        folded.WINOGRAD_DTYPES = dtypes


def _in_turn(calls: list[Callable[[], object]]) -> Callable[[], object]:
    """One call per invocation, the next of ``calls`` each time."""
    state = {"next": 0}

    def run():
        i = state["next"]
        state["next"] = (i + 1) % len(calls)
        return calls[i]()

    return run


def bench_convs(reps: int) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    for batch in CONV_BATCHES:
        for c, (h, w) in zip(stage_widths("w32", 4), branch_sizes(256, 192), strict=True):
            x, r = (torch.randn(batch, c, h, w).contiguous(memory_format=torch.channels_last) for _ in range(2))
            bias = torch.randn(c)
            weights = [torch.randn(c, c, 3, 3) / (3 * c**0.5) for _ in range(WEIGHTS)]
            panels = [winograd_panel(wt) for wt in weights]
            packed = [prepack_weight(wt, stride=1, padding=1, input_shape=tuple(x.shape)) for wt in weights]
            fns = {
                "reference": _in_turn(
                    [functools.partial(winograd_conv_reference, x, wt, None, bias, r, True) for wt in weights]
                ),
                "onednn": _in_turn(
                    [
                        functools.partial(conv_bias_act, x, wt, bias, padding=1, residual=r, packed=p)
                        for wt, p in zip(weights, packed, strict=True)
                    ]
                ),
                "winograd": _in_turn(
                    [
                        functools.partial(winograd_conv, x, wt, u, bias, residual=r, backend="cpp")
                        for wt, u in zip(weights, panels, strict=True)
                    ]
                ),
            }
            with torch.inference_mode():
                exact = winograd_conv_reference(x.double(), weights[0].double(), None, bias.double(), r.double(), True)
                errors = {k: (f().double() - exact).abs().max().item() for k, f in fns.items()}  # all on weights[0]
                for f in fns.values():  # back to weights[0] for the rounds
                    for _ in range(WEIGHTS - 1):
                        f()
                samples = alternate(fns, reps * WEIGHTS)
            med = {k: statistics.median(v) for k, v in samples.items()}
            flops = 2 * batch * h * w * c * c * 9
            row = {"batch": batch, "channels": c, "size": f"{h}x{w}", "pixels": batch * h * w}
            for k in fns:
                row[f"{k}_us"] = med[k] * 1e6
                row[f"{k}_err"] = errors[k]
                row[f"{k}_gflops"] = flops / med[k] / 1e9  # direct-conv FLOPs per second (Winograd: effective)
            row["winograd_vs_onednn"] = med["onednn"] / med["winograd"]
            row["winograd_vs_reference"] = med["reference"] / med["winograd"]
            rows.append(row)
            speedup = row["winograd_vs_onednn"]
            print(f"  b{batch} c{c} {h}x{w}: winograd {row['winograd_us']:.0f} us, x{speedup:.2f} oneDNN")
    return rows


def bench_model(reps: int) -> list[dict]:
    torch.manual_seed(0)
    model = randomize_batchnorm_(HRNet("w32", head="pose")).eval()
    engine = optimize(model, backend="cpp")
    direct_engine = optimize(model, backend="cpp")  # its own engine: the op plan it records has no Winograd
    rows = []
    for batch in MODEL_BATCHES:
        x = torch.randn(batch, 3, 256, 192)

        def direct(x=x):
            with winograd_off():
                return direct_engine(x)

        fns = {"direct": direct, "winograd": lambda x=x: engine(x)}
        with torch.inference_mode():
            exact = model.double()(x.double())
            model.float()
            errors = {k: (f().double() - exact).abs().max().item() for k, f in fns.items()}
            samples = alternate(fns, reps, warmup=1)
        med = {k: statistics.median(v) for k, v in samples.items()}
        row = {"model": "w32 pose 256x192", "batch": batch}
        for k in fns:
            row[f"{k}_ms"] = med[k] * 1e3
            row[f"{k}_min_ms"] = min(samples[k]) * 1e3
            row[f"{k}_err"] = errors[k]
        row["winograd_vs_direct"] = med["direct"] / med["winograd"]
        rows.append(row)
        print(f"  model b{batch}: direct {row['direct_ms']:.1f} ms, winograd {row['winograd_ms']:.1f} ms")
    return rows


CONV_COLUMNS = [
    ("batch", "batch", "d"),
    ("channels", "channels", "d"),
    ("size", "size", "s"),
    ("reference_us", "reference us", ".0f"),
    ("onednn_us", "oneDNN us", ".0f"),
    ("winograd_us", "winograd us", ".0f"),
    ("onednn_gflops", "oneDNN GFLOP/s", ".0f"),
    ("winograd_gflops", "winograd eff. GFLOP/s", ".0f"),
    ("winograd_vs_onednn", "vs oneDNN", ".2f"),
    ("winograd_vs_reference", "vs reference", ".2f"),
    ("onednn_err", "oneDNN max |err|", ".1e"),
    ("winograd_err", "winograd max |err|", ".1e"),
]
MODEL_COLUMNS = [
    ("model", "model", "s"),
    ("batch", "batch", "d"),
    ("direct_ms", "optimize() direct ms", ".1f"),
    ("winograd_ms", "optimize() winograd ms", ".1f"),
    ("winograd_vs_direct", "speedup", ".3f"),
    ("direct_err", "direct max |err|", ".1e"),
    ("winograd_err", "winograd max |err|", ".1e"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--conv-reps", type=int, default=30, help="rounds per conv (each over all 16 weights)")
    parser.add_argument("--model-reps", type=int, default=9)
    add_report_arguments(parser, "cpu_winograd")
    args = parser.parse_args(argv)
    env, setup, load_before = cpp_run_setup(
        "cpu_winograd.py",
        argv,
        args.threads,
        f"medians of {args.conv_reps} x {WEIGHTS} (convs) and {args.model_reps} (model) alternating rounds",
    )
    print(setup)
    conv_table = table(conv_rows := bench_convs(args.conv_reps), CONV_COLUMNS)
    print(f"\nW32 stage-4 block convs, fp32 channels_last, + bias + residual + ReLU\n{conv_table}")
    model_table = table(model_rows := bench_model(args.model_reps), MODEL_COLUMNS)
    print(f"\nHRNet-W32 pose forward, optimize() fp32 channels_last\n{model_table}")
    env["load"] = (load_before, os.getloadavg()[0])
    if args.out:
        results = {"setup": setup, "environment": env, "convs": conv_rows, "model": model_rows}
        write_report(
            args.out,
            args.name,
            results,
            "Winograd 3x3 convs on backend cpp, CPU (benchmarks/cpu_winograd.py)",
            env,
            f"\n{setup}.\n\nOne 3x3 block conv per stage-4 branch of HRNet-W32 pose (fp32 channels_last, + bias "
            f"+ residual + ReLU), {WEIGHTS} distinct weights taken in turn; GFLOP/s count the direct conv's "
            f"FLOPs (Winograd's are effective):\n\n```\n{conv_table}\n```\n\nHRNet-W32 pose forward, 256x192, "
            f"optimize() (backend cpp, fp32 channels_last) with Winograd on and off; errors against the "
            f"float64 model:\n\n```\n{model_table}\n```\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
