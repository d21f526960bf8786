"""Level 2 of the cpp backend on the CPU (the C++/OpenMP ``fusion_branch`` kernel), side by side in one
run with what ran before it.

1. The whole stage-4 fusion step of HRNet-W32 pose (batch 8, 256x192 input: branches 64x48 ... 8x6
   with 32 ... 256 channels, all four output branches; eval, BatchNorm randomized), per layout and
   dtype:
     reference        the official composition (conv, BN, upsample, adds, ReLU; backend reference)
     level 1          backend cpp with level 2 off: framework conv + BN per path, then upsample_sum
     level 1 folded   the same with BN folded into oneDNN's fused convs, as optimize() ran it before
     level 2          backend cpp: BN folded, one fusion_branch call per output branch (and one per
                      earlier step of a downsample chain: the kernel with a zero base)
   with the step's multiply-adds (every conv and projection: 719 M at batch 8) per second of level 2,
   and the step's compute floor: those multiply-adds at the float32 peak of cpu_peak.c measured at
   the start of the run (cpu_roofline.py's measure_peak), the least time any implementation that
   does them can take here.
2. Per output branch of that step (fp32, channels_last): the hand-written C++ kernel (one
   fusion_branch call: implicit-GEMM strided convs + low-resolution projections + epilogue) against
   the same paths through oneDNN (its fused convs, BN folded, via conv_bias_act) + upsample_sum on
   cpp, with the GFLOP/s of each (the convs' and projections' multiply-adds x 2 / time): whether the
   strided convs would be faster through oneDNN.
3. Each earlier step of the step's downsample chains (relu(conv3x3 stride 2 + bias), BN folded;
   fp32, batch 8, both layouts): torch's conv + ReLU (how level 2 ran them before, and still does
   off the CPU), the prepared oneDNN conv of optimize()'s FoldedConv, and the fusion_branch kernel
   with a channels_last zero base, so a channels_last result whatever x's layout (how level 2 runs
   them on the CPU now, outside optimize()).
4. The whole HRNet-W32 pose forward (batch 8, 256x192) under ``optimize()`` (channels_last), with
   level 2 (now) and with it off (as before), beside the eager reference model.

Calls alternate (A B C D A B C D ...) so load from other processes hits all alike; medians (and
minima) over the rounds. Writes cpu_level2.json and cpu_level2.md to --out when given.

    python benchmarks/cpu_level2.py [--threads N] [--step-reps 40] [--model-reps 7] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from cpu_ext import alternate, cpp_run_setup, summary_row
from cpu_roofline import measure_peak
from torch import nn

from hrnet_fast import HRNet, optimize
from hrnet_fast.bench.report import table
from hrnet_fast.bench.results import add_report_arguments, write_report
from hrnet_fast.bench.shapes import branch_sizes, stage_widths
from hrnet_fast.layout import weight_layout
from hrnet_fast.models.engine import fold_children_
from hrnet_fast.nn import FoldedConv, MultiResolutionFusion, fold_conv_bn, fusion
from hrnet_fast.nn.folded_fusion import folded_branches
from hrnet_fast.ops import conv_bias_act, fusion_branch, fusion_branch_reference, upsample_sum
from hrnet_fast.testing import randomize_batchnorm_

BATCH = 8
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@contextlib.contextmanager
def level2_off() -> Iterator[None]:
    """MultiResolutionFusion runs level 1 even where level 2 applies (how the cpp backend ran before)."""
    use_level2 = fusion.use_level2
    fusion.use_level2 = lambda *args: False
    try:
        yield
    finally:
        fusion.use_level2 = use_level2


def without_level2(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        with level2_off():
            return fn()

    return run


def step_macs(widths: list[int], sizes: list[tuple[int, int]], batch: int) -> int:
    """Multiply-adds of one fusion step: per output branch i, each lower branch j's 1x1 projection
    (at j's size) and each higher branch j's chain of i - j stride-2 3x3 convs (C_j -> C_j, the last
    C_j -> C_i), each at its output's size."""
    macs = 0
    for i, c_out in enumerate(widths):
        for j, c_in in enumerate(widths):
            if j > i:
                macs += sizes[j][0] * sizes[j][1] * c_in * c_out
            for k in range(i - j):  # the chain's steps, down to sizes[j + k + 1]
                h, w = sizes[j + k + 1]
                macs += h * w * c_in * 9 * (c_out if k == i - j - 1 else c_in)
    return batch * macs


def bench_step(reps: int, macs: int, peak_gmacs: float) -> list[dict]:
    widths, sizes = stage_widths("w32", 4), branch_sizes(256, 192)
    torch.manual_seed(0)
    module = randomize_batchnorm_(MultiResolutionFusion(widths)).eval()
    rows = []
    for dname, dtype in DTYPES.items():
        for fname, fmt in FORMATS.items():
            shapes = [(BATCH, c, *hw) for c, hw in zip(widths, sizes, strict=True)]
            xs = [torch.randn(s).to(dtype).contiguous(memory_format=fmt) for s in shapes]
            ref, cpp = copy.deepcopy(module).to(dtype), copy.deepcopy(module).to(dtype)
            folded = copy.deepcopy(cpp)
            fold_children_(folded)
            ref.backend = "reference"
            cpp.backend = folded.backend = "cpp"
            fns = {
                "reference": lambda m=ref, xs=xs: m(xs),
                "level1": without_level2(lambda m=cpp, xs=xs: m(xs)),
                "level1_folded": without_level2(lambda m=folded, xs=xs: m(xs)),
                "level2": lambda m=cpp, xs=xs: m(xs),
            }
            with torch.inference_mode():
                outputs = {k: f() for k, f in fns.items()}
                samples = alternate(fns, reps)
            row = summary_row(samples, outputs, outputs["reference"], {"dtype": dname, "layout": fname})
            row["level2_gmacs"] = macs / row["level2_ms"] / 1e6
            row["floor_ms"] = macs / peak_gmacs / 1e6
            rows.append(row)
            print(f"  step {dname} {fname}: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items() if "vs" in k))
    return rows


def _through_onednn(paths, biases, base, num_down: int):
    """A branch as level 1 with folded BN: oneDNN's fused convs per path, then upsample_sum on cpp."""
    outs = [
        conv_bias_act(x, w, b, stride=s, padding=p, relu=False) for (x, w, s, p), b in zip(paths, biases, strict=True)
    ]
    return upsample_sum(base, outs[:num_down], outs[num_down:], backend="cpp")


def bench_branches(reps: int) -> list[dict]:
    widths, sizes = stage_widths("w32", 4), branch_sizes(256, 192)
    torch.manual_seed(0)
    module = randomize_batchnorm_(MultiResolutionFusion(widths)).eval()
    shapes = [(BATCH, c, *hw) for c, hw in zip(widths, sizes, strict=True)]
    xs = [torch.randn(s).contiguous(memory_format=torch.channels_last) for s in shapes]
    rows = []
    with torch.inference_mode():
        for i, folded in enumerate(folded_branches(module, torch.float32, xs[0].device)):
            down = []
            for j, steps in enumerate(folded.down_steps):  # the earlier steps of each chain, outside both
                t = xs[j]
                for w, b in steps:
                    t = conv_bias_act(t, w, b, stride=2, padding=1)
                down.append(t)
            low = xs[i + 1 :]
            args = (xs[i], down, folded.down_weight, low, folded.low_weight, folded.bias, "nearest", False, True)
            # oneDNN's convs take (C_out, C_in, k, k) memory; the first path adds the step's bias
            paths = [(x, w.contiguous(), 2, 1) for x, w in zip(down, folded.down_weight, strict=True)]
            paths += [(x, w.contiguous(), 1, 0) for x, w in zip(low, folded.low_weight, strict=True)]
            biases = [folded.bias] + [torch.zeros_like(folded.bias)] * (len(paths) - 1)

            fns = {
                "onednn": functools.partial(_through_onednn, paths, biases, xs[i], len(down)),
                "kernel": functools.partial(fusion_branch, *args[:6], backend="cpp"),
            }
            outputs = {k: f() for k, f in fns.items()}
            samples = alternate(fns, reps)
            row = summary_row(samples, outputs, fusion_branch_reference(*args), {"branch": i})
            macs = sum(x[0, 0].numel() // s**2 * x.shape[1] * w[0, 0].numel() for x, w, s, _ in paths)
            flops = 2 * BATCH * widths[i] * macs
            row["kernel_gflops"] = flops / row["kernel_ms"] / 1e6
            row["onednn_gflops"] = flops / row["onednn_ms"] / 1e6
            rows.append(row)
            print(f"  branch {i}: kernel {row['kernel_ms']:.2f} ms, oneDNN + upsample_sum {row['onednn_ms']:.2f} ms")
    return rows


def chain_steps(widths: list[int], sizes: list[tuple[int, int]]) -> list[tuple[int, tuple[int, int], int]]:
    """The distinct earlier steps of the step's downsample chains: (channels, input size, count),
    channels in = out (every step before a chain's last)."""
    steps: dict[tuple[int, tuple[int, int]], int] = {}
    for i in range(len(widths)):
        for j in range(i):
            for k in range(i - j - 1):
                key = (widths[j], sizes[j + k])
                steps[key] = steps.get(key, 0) + 1
    return [(c, hw, count) for (c, hw), count in steps.items()]


def _torch_chain_step(x, weight, bias):
    return torch.relu(F.conv2d(x, weight, bias, stride=2, padding=1))


def bench_chain_steps(reps: int) -> list[dict]:
    widths, sizes = stage_widths("w32", 4), branch_sizes(256, 192)
    rows = []
    for c, (h, w), count in chain_steps(widths, sizes):
        torch.manual_seed(0)
        conv = nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False)
        bn = randomize_batchnorm_(nn.BatchNorm2d(c)).eval()
        folded = FoldedConv(conv, bn, relu=True)
        weight, bias = fold_conv_bn(conv, bn)
        panel = weight_layout(weight)
        for fname, fmt in FORMATS.items():
            x = torch.randn(BATCH, c, h, w).contiguous(memory_format=fmt)
            zeros = torch.zeros(BATCH, c, (h + 1) // 2, (w + 1) // 2).contiguous(memory_format=torch.channels_last)
            fns = {
                "torch": functools.partial(_torch_chain_step, x, weight, bias),
                "onednn": functools.partial(folded, x),
                "kernel": functools.partial(fusion_branch, zeros, [x], [panel], [], [], bias, backend="cpp"),
            }
            with torch.inference_mode():
                outputs = {k: f() for k, f in fns.items()}
                samples = alternate(fns, reps)
                want = _torch_chain_step(x.double(), weight.double(), bias.double())
            base = {"channels": c, "size": f"{h}x{w}", "count": count, "layout": fname}
            row = summary_row(samples, outputs, want, base)
            row["kernel_gmacs"] = BATCH * c * c * 9 * ((h + 1) // 2) * ((w + 1) // 2) / row["kernel_ms"] / 1e6
            rows.append(row)
            speedups = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if "vs" in k)
            print(f"  chain step {c} ch {h}x{w} {fname}: {speedups}")
    return rows


def bench_model(reps: int) -> list[dict]:
    torch.manual_seed(0)
    model = randomize_batchnorm_(HRNet("w32", head="pose")).eval()
    x = torch.randn(BATCH, 3, 256, 192)
    reference = copy.deepcopy(model)
    reference.backend = "reference"
    engine = optimize(model, backend="cpp")
    engine_level1 = optimize(model, backend="cpp")  # its own engine: the op plan it records runs level 1
    fns = {
        "reference": lambda: reference(x),
        "optimize_level1": without_level2(lambda: engine_level1(x)),
        "optimize_level2": lambda: engine(x),
    }
    with torch.inference_mode():
        outputs = {k: f() for k, f in fns.items()}
        samples = alternate(fns, reps, warmup=1)
    base = {"model": "w32 pose 256x192", "dtype": "fp32", "layout": "cl"}
    row = summary_row(samples, outputs, outputs["reference"], base)
    print("  model: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if "vs" in k))
    return [row]


STEP_COLUMNS = [
    ("dtype", "dtype", "s"),
    ("layout", "layout", "s"),
    ("reference_ms", "reference ms", ".2f"),
    ("level1_ms", "level 1 ms", ".2f"),
    ("level1_folded_ms", "level 1 folded ms", ".2f"),
    ("level2_ms", "level 2 ms", ".2f"),
    ("level2_min_ms", "level 2 min", ".2f"),
    ("level2_vs_reference", "L2 vs ref", ".2f"),
    ("level2_vs_level1", "L2 vs L1", ".2f"),
    ("level2_vs_level1_folded", "L2 vs L1 folded", ".2f"),
    ("level2_gmacs", "L2 GMAC/s", ".0f"),
    ("floor_ms", "floor ms", ".2f"),
    ("level2_err", "L2 max |err|", ".1e"),
]
BRANCH_COLUMNS = [
    ("branch", "branch", "d"),
    ("onednn_ms", "oneDNN + upsample_sum ms", ".3f"),
    ("kernel_ms", "kernel ms", ".3f"),
    ("onednn_gflops", "oneDNN GFLOP/s", ".0f"),
    ("kernel_gflops", "kernel GFLOP/s", ".0f"),
    ("kernel_vs_onednn", "kernel vs oneDNN", ".2f"),
    ("kernel_err", "kernel max |err|", ".1e"),
]
CHAIN_COLUMNS = [
    ("channels", "channels", "d"),
    ("size", "input", "s"),
    ("count", "per step", "d"),
    ("layout", "layout", "s"),
    ("torch_ms", "torch conv + ReLU ms", ".3f"),
    ("onednn_ms", "oneDNN prepared ms", ".3f"),
    ("kernel_ms", "kernel ms", ".3f"),
    ("kernel_gmacs", "kernel GMAC/s", ".0f"),
    ("kernel_vs_torch", "kernel vs torch", ".2f"),
    ("kernel_vs_onednn", "kernel vs oneDNN", ".2f"),
    ("torch_err", "torch max |err|", ".1e"),
    ("kernel_err", "kernel max |err|", ".1e"),
]
MODEL_COLUMNS = [
    ("model", "model", "s"),
    ("reference_ms", "reference ms", ".0f"),
    ("optimize_level1_ms", "optimize() L1 ms", ".0f"),
    ("optimize_level2_ms", "optimize() L2 ms", ".0f"),
    ("optimize_level2_vs_optimize_level1", "L2 vs L1", ".3f"),
    ("optimize_level2_vs_reference", "L2 vs ref", ".2f"),
    ("optimize_level2_err", "L2 max |err|", ".1e"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--step-reps", type=int, default=40)
    parser.add_argument("--model-reps", type=int, default=7)
    add_report_arguments(parser, "cpu_level2")
    args = parser.parse_args(argv)
    env, setup, load_before = cpp_run_setup(
        "cpu_level2.py",
        argv,
        args.threads,
        f"medians of {args.step_reps} (step) and {args.model_reps} (model) alternating rounds",
    )
    print(setup)
    peak = measure_peak(torch.get_num_threads(), reps=3)["fp32"]
    macs = step_macs(stage_widths("w32", 4), branch_sizes(256, 192), BATCH)
    floor = f"{macs / 1e6:.0f} M multiply-adds, {macs / peak / 1e6:.2f} ms at the fp32 peak of {peak:.1f} GMAC/s"
    print(f"the step: {floor}")
    step_table = table(step_rows := bench_step(args.step_reps, macs, peak), STEP_COLUMNS)
    print(f"\nW32 pose stage-4 fusion step, batch {BATCH}, all output branches\n{step_table}")
    branch_table = table(branch_rows := bench_branches(args.step_reps), BRANCH_COLUMNS)
    print(f"\nper output branch, fp32 channels_last: the kernel vs the same paths through oneDNN\n{branch_table}")
    chain_table = table(chain_rows := bench_chain_steps(args.step_reps), CHAIN_COLUMNS)
    print(f"\nthe earlier steps of the downsample chains, fp32 batch {BATCH}\n{chain_table}")
    model_table = table(model_rows := bench_model(args.model_reps), MODEL_COLUMNS)
    print(f"\nHRNet-W32 pose forward, batch {BATCH}, optimize() channels_last fp32\n{model_table}")
    env["load"] = (load_before, os.getloadavg()[0])
    if args.out:
        results = {
            "setup": setup,
            "environment": env,
            "step_macs": macs,
            "fp32_peak_gmacs": peak,
            "step": step_rows,
            "branches": branch_rows,
            "chain_steps": chain_rows,
            "model": model_rows,
        }
        write_report(
            args.out,
            args.name,
            results,
            "Level 2 on backend cpp, CPU (benchmarks/cpu_level2.py)",
            env,
            f"\n{setup}.\n\nW32 pose stage-4 fusion step, batch {BATCH}, all four output branches "
            f"(level 1: upsample_sum on cpp + framework convs; folded: BN folded into oneDNN convs; the step's "
            f"convs and projections: {floor}, the floor column):\n\n"
            f"```\n{step_table}\n```\n\nPer output branch (fp32, channels_last), the C++ kernel against the same "
            f"paths through oneDNN's fused convs (BN folded) + upsample_sum on cpp; GFLOP/s of the convs and "
            f"projections:\n\n```\n{branch_table}\n```\n\nThe earlier steps of the step's downsample chains "
            f"(relu(conv3x3 stride 2 + bias), BN folded, fp32, batch {BATCH}; per step: how many the step runs): "
            f"torch's conv + ReLU, optimize()'s prepared oneDNN conv (FoldedConv) and the fusion_branch kernel with "
            f"a channels_last zero base (so a channels_last result; layout: x's); errors against float64:"
            f"\n\n```\n{chain_table}\n```\n\n"
            f"HRNet-W32 pose forward, batch {BATCH}, 256x192, optimize() (channels_last, fp32) with level 2 on "
            f"and off:\n\n```\n{model_table}\n```\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
