"""GPU check and benchmark of the triton backend (H100/H200): correctness on CUDA, then timings.

    pip install --no-deps --no-build-isolation -e .    # hrnet_fast.kernels must import
    python benchmarks/gpu_triton.py OUT_DIR [--quick] [--compile-all] [--sweep] [--budget-s 170]

Cases: HRNet stage-4 fusion, W32 at 256x192 input (branches 64x48 ... 8x6) with batch 32 and 128,
W48 at 384x288 (96x72 ... 12x9) with batch 32 and 128, each in fp16 channels_last and fp32 NCHW.

- level 1: ``upsample_sum`` of output branch 0 (x0 + up(p1) + up(p2) + up(p3), ReLU; nearest and
  bilinear) on triton (called eagerly, and replayed from CUDA graphs) vs the eager reference vs
  ``torch.compile`` of it; achieved GB/s = bytes read and written once / graph-replay time,
  against the device-to-device copy bandwidth measured here.
- level 2: the whole fusion step (all 4 output branches, eval, BN) with backend triton (folded BN,
  one fused launch per branch) vs the eager reference module vs ``torch.compile`` of it; also the
  triton step replayed from a CUDA graph.

Timing: ``triton.testing.do_bench`` medians (it flushes L2 before every call); inputs are also
rotated over copies whose total exceeds 2 x L2. Correctness: every timed triton result against
the reference, judged as the tests do (fp32 close to float64; fp16 error <= 2x the reference's own).
Targets (issue 3): level 1 >= 80% of copy bandwidth on shapes larger than L2; level 2 >= 5x eager
and faster than torch.compile at W32, batch 128, fp16 channels_last. Writes results.json and
results.md to OUT_DIR. ``torch.compile`` (nearest only) runs for the fp16 channels_last cases
only unless --compile-all, and no new compile starts after 60% of --budget-s (the target case
runs first); --sweep also times a few tile choices of the level-2 kernel for the target case.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

try:
    import triton
    import triton.testing

    import hrnet_fast
    import hrnet_fast.kernels
    from hrnet_fast.bench.results import environment, markdown_header
    from hrnet_fast.bench.timer import copy_bandwidth
    from hrnet_fast.nn import MultiResolutionFusion
    from hrnet_fast.ops import upsample_sum, upsample_sum_reference
    from hrnet_fast.testing import judge
except ImportError as exc:
    sys.exit(f"gpu_triton: {exc}; install the checkout first: pip install --no-deps --no-build-isolation -e .")

CASES = [  # (name, widths, input size, batch)
    ("W32 b32", 32, (256, 192), 32),
    ("W32 b128", 32, (256, 192), 128),
    ("W48 b32", 48, (384, 288), 32),
    ("W48 b128", 48, (384, 288), 128),
]
FLAVOURS = [
    ("fp16 CL", torch.float16, torch.channels_last),
    ("fp32 NCHW", torch.float32, torch.contiguous_format),
]
TARGET = ("W32 b128", "fp16 CL")


def branch_sizes(h: int, w: int) -> list[tuple[int, int]]:
    sizes = [(math.ceil(h / 4), math.ceil(w / 4))]
    for _ in range(3):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


def nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


DEVICE = "cuda"  # --smoke: "cpu", under TRITON_INTERPRET=1, tiny shapes, to test this script itself
L2_BYTES = 0  # the GPU's L2 cache size, read from its properties in main()


def rotated(make, working_set: int):
    """Copies of make()'s inputs, together over 2 x L2, so cycling through them never hits in L2."""
    return [make() for _ in range(max(1, min(8, math.ceil(2 * L2_BYTES / max(working_set, 1)))))]


def bench_ms(fn, inputs) -> float:
    """Median time of fn(*inputs[k]) over calls cycling through the input copies."""
    cycle = itertools.cycle(inputs)
    if DEVICE != "cuda":
        start = time.perf_counter()
        fn(*next(cycle))
        return (time.perf_counter() - start) * 1e3
    return triton.testing.do_bench(lambda: fn(*next(cycle)), warmup=25, rep=100, return_mode="median")


def copy_gbps() -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), 1 GiB buffers on the GPU."""
    return copy_bandwidth(torch.device(DEVICE), nbytes=2**30 if DEVICE == "cuda" else 2**24) / 1e9


def judge_error(got, ref_same, ref64) -> tuple[float, bool]:
    """(max abs error vs float64, passes the tests' rule: hrnet_fast.testing.judge)."""
    verdict = judge(got, ref_same, ref64, tol=1e-5)
    return verdict.error, verdict.ok


def fusion_module(width: int, mode: str) -> MultiResolutionFusion:
    fuse = MultiResolutionFusion([width * 2**k for k in range(4)], upsample=mode)
    with torch.no_grad():
        for m in fuse.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return fuse.to(DEVICE).eval()


def maybe_compile(fn, enabled: bool, state: dict):
    """torch.compile(fn), or None when disabled or the time budget is mostly spent."""
    if not enabled or time.perf_counter() - state["start"] > 0.6 * state["budget"]:
        return None
    return torch.compile(fn, dynamic=False)


def graphed(fn, inputs) -> list[tuple]:
    """fn(*args) captured in one CUDA graph per input copy: bench_ms(replay, result) times the kernels
    without Python or launch overhead (the kernel-time view of the bandwidth target)."""
    replays = []
    for args in inputs:
        if DEVICE != "cuda":
            replays.append((lambda args=args: fn(*args),))
            continue
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn(*args)
        replays.append((graph.replay,))
    return replays


def replay(run) -> None:
    run()


def level1(case, flavour, mode, compile_on, state) -> dict:
    name, width, (h, w), batch = case
    fname, dtype, fmt = flavour
    sizes = branch_sizes(h, w)

    def make():
        return [
            torch.randn(batch, width, *hw, device=DEVICE, dtype=dtype).contiguous(memory_format=fmt) for hw in sizes
        ]

    sample = make()
    moved = 2 * nbytes(sample[:1]) + nbytes(sample[1:])  # read base once, each low map once, write out
    inputs = rotated(make, moved)

    def fused(base, *low):
        return upsample_sum(base, (), low, mode=mode, backend="triton")

    def reference(base, *low):
        return upsample_sum_reference(base, (), low, mode, False, True)

    base, *low = sample
    got, ref = fused(base, *low), reference(base, *low)
    ref64 = upsample_sum_reference(base.double(), (), [t.double() for t in low], mode, False, True)
    err, ok = judge_error(got, ref, ref64)
    row = {"case": name, "flavour": fname, "mode": mode, "bytes": moved, "max_err": err, "correct": ok}
    row["triton_ms"] = bench_ms(fused, inputs)
    row["triton_graph_ms"] = bench_ms(replay, graphed(fused, inputs))
    row["eager_ms"] = bench_ms(reference, inputs)
    compiled = maybe_compile(reference, compile_on, state)
    row["compile_ms"] = bench_ms(compiled, inputs) if compiled else None
    row["triton_GBps"] = moved / row["triton_graph_ms"] / 1e6
    row["of_copy_bw"] = row["triton_GBps"] / state["copy_GBps"]
    row["larger_than_L2"] = moved > L2_BYTES
    return row


def level2(case, flavour, mode, compile_on, state) -> dict:
    name, width, (h, w), batch = case
    fname, dtype, fmt = flavour
    sizes = branch_sizes(h, w)
    fuse = fusion_module(width, mode).to(dtype=dtype, memory_format=fmt)
    fuse.backend = "triton"
    ref = copy.deepcopy(fuse)
    ref.backend = "reference"

    def make():
        return [
            torch.randn(batch, width * 2**k, *hw, device=DEVICE, dtype=dtype).contiguous(memory_format=fmt)
            for k, hw in enumerate(sizes)
        ]

    sample = make()
    moved = 2 * nbytes(sample)  # read every branch once, write every output once
    inputs = rotated(make, moved)
    with torch.inference_mode():
        got, want = fuse(sample), ref(sample)
        ref64 = copy.deepcopy(ref).double()([x.double() for x in sample])
        checks = [judge_error(a, b, c) for a, b, c in zip(got, want, ref64, strict=True)]
        row = {"case": name, "flavour": fname, "mode": mode, "bytes": moved}
        row["max_err"] = max(e for e, _ in checks)
        row["correct"] = all(ok for _, ok in checks)
        row["triton_ms"] = bench_ms(lambda *xs: fuse(list(xs)), inputs)
        row["triton_graph_ms"] = bench_ms(replay, graphed(lambda *xs: fuse(list(xs)), inputs))
        row["eager_ms"] = bench_ms(lambda *xs: ref(list(xs)), inputs)
        compiled = maybe_compile(ref, compile_on, state)
        row["compile_ms"] = bench_ms(lambda *xs: compiled(list(xs)), inputs) if compiled else None
    row["speedup_vs_eager"] = row["eager_ms"] / row["triton_ms"]
    row["speedup_vs_compile"] = row["compile_ms"] / row["triton_ms"] if row["compile_ms"] else None
    row["triton_GBps"] = moved / row["triton_ms"] / 1e6
    return row


def sweep(case, flavour) -> list[dict]:
    """Times a few tile choices of the level-2 kernel per branch of one case (launcher level)."""
    from hrnet_fast.kernels.fusion_branch import launch_config, launch_fusion_branch
    from hrnet_fast.nn.folded_fusion import folded_branches

    name, width, (h, w), batch = case
    _, dtype, fmt = flavour
    sizes = branch_sizes(h, w)
    fuse = fusion_module(width, "nearest").to(dtype=dtype, memory_format=fmt)
    xs = [
        torch.randn(batch, width * 2**k, *hw, device=DEVICE, dtype=dtype).contiguous(memory_format=fmt)
        for k, hw in enumerate(sizes)
    ]
    rows = []
    with torch.inference_mode():
        for i, fb in enumerate(folded_branches(fuse, dtype, xs[0].device)):
            down = []
            for j, steps in enumerate(fb.down_steps):
                t = xs[j]
                for wt, b in steps:
                    t = torch.relu(torch.nn.functional.conv2d(t, wt, b, stride=2, padding=1))
                down.append(t)
            out = torch.empty_like(xs[i])
            cl = fmt == torch.channels_last
            args = (
                out,
                xs[i],
                down,
                fb.down_weight,
                xs[i + 1 :],
                fb.low_weight,
                fb.bias,
                "nearest",
                False,
                True,
                cl,
            )
            sm_count = torch.cuda.get_device_properties(out.device).multi_processor_count if DEVICE == "cuda" else 1
            default = launch_config(out.shape[0] * out.shape[2] * out.shape[3], out.shape[1], 2, False, sm_count)
            for bp, bn, bk, warps, stages in itertools.product([64, 128], [32, 64, 128], [32, 64], [4, 8], [3]):
                cfg = {"BLOCK_P": bp, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": warps, "num_stages": stages}
                if bn > max(32, triton.next_power_of_2(out.shape[1])) or (warps == 8 and bp * bn < 64 * 128):
                    continue
                try:
                    ms = bench_ms(lambda cfg=cfg, args=args: launch_fusion_branch(*args, cfg), [()])
                except Exception as exc:  # out of resources: skip the tile
                    ms, cfg = None, {**cfg, "error": type(exc).__name__}
                rows.append({"case": name, "branch": i, **cfg, "ms": ms, "default": cfg == default})
    return rows


def _table(header: str, rows: list[list[str]]) -> list[str]:
    names = header.split(",")
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)] + ["| " + " | ".join(r) + " |" for r in rows]


def _level1_row(r: dict) -> list[str]:
    gbps, share, big = (
        f"{r['triton_GBps']:.0f}",
        f"{r['of_copy_bw']:.0%}",
        "yes" if r["larger_than_L2"] else "no",
    )
    times = [_ms(r["triton_ms"]), _ms(r["triton_graph_ms"]), _ms(r["eager_ms"]), _ms(r["compile_ms"])]
    return [r["case"], r["flavour"], r["mode"], f"{r['bytes'] / 1e6:.1f}", *times, gbps, share, big, _ok(r)]


def _level2_row(r: dict) -> list[str]:
    times = [_ms(r["triton_ms"]), _ms(r["triton_graph_ms"]), _ms(r["eager_ms"]), _ms(r["compile_ms"])]
    speedups = [_x(r["speedup_vs_eager"]), _x(r["speedup_vs_compile"])]
    return [r["case"], r["flavour"], r["mode"], *times, *speedups, _ok(r)]


def _sweep_row(r: dict) -> list[str]:
    tile = [str(r[k]) for k in ("branch", "BLOCK_P", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")]
    return [*tile, _ms(r["ms"]), "*" if r["default"] else ""]


def markdown(results: dict) -> str:
    env = results["env"]
    lines = [
        markdown_header("triton backend (benchmarks/gpu_triton.py)", env["header"]),
        f"Copy bandwidth {results['copy_GBps']:.0f} GB/s (read + write), measured in this run.",
        "",
        "### Level 1: upsample_sum of output branch 0 (ms, median)",
        "",
        *_table(
            "case,flavour,mode,MB moved,triton,triton graph,eager,compile,GB/s,of copy BW,> L2,correct",
            [_level1_row(r) for r in results["level1"]],
        ),
        "",
        "### Level 2: whole fusion step, 4 output branches, eval (ms, median)",
        "",
        *_table(
            "case,flavour,mode,triton,triton graph,eager,compile,x eager,x compile,correct",
            [_level2_row(r) for r in results["level2"]],
        ),
        "",
        "## Targets",
        "",
        *[f"- {t}" for t in results["targets"]],
    ]
    if results.get("sweep"):
        lines += ["", "### Level-2 tile sweep (target case; * = the default choice)", ""]
        lines += _table(
            "branch,BLOCK_P,BLOCK_N,BLOCK_K,warps,stages,ms,default",
            [_sweep_row(r) for r in results["sweep"]],
        )
    return "\n".join(lines) + "\n"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _ok(r) -> str:
    return f"{'yes' if r['correct'] else 'NO'} ({r['max_err']:.2g})"


def targets(results: dict) -> list[str]:
    big = [r for r in results["level1"] if r["larger_than_L2"]]
    worst = min(big, key=lambda r: r["of_copy_bw"]) if big else None
    out = [
        "level 1 >= 80% of copy bandwidth on shapes > L2: "
        + (f"worst {worst['of_copy_bw']:.0%} ({worst['case']} {worst['flavour']} {worst['mode']})" if worst else "n/a")
    ]
    for r in results["level2"]:
        if (r["case"], r["flavour"]) == TARGET and r["mode"] == "nearest":
            out.append(f"level 2 >= 5x eager at {r['case']} {r['flavour']}: {r['speedup_vs_eager']:.2f}x")
            vs = r["speedup_vs_compile"]
            out.append("level 2 faster than torch.compile: " + (f"{vs:.2f}x" if vs else "not measured"))
    out.append(
        "all results correct: " + ("yes" if all(r["correct"] for r in results["level1"] + results["level2"]) else "NO")
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="only the target case (W32 b128 fp16 CL)")
    parser.add_argument("--compile-all", action="store_true", help="torch.compile the fp32 cases too")
    parser.add_argument("--sweep", action="store_true", help="time level-2 tile choices for the target case")
    parser.add_argument("--budget-s", type=float, default=170, help="stop starting torch.compile runs after 60%%")
    parser.add_argument("--smoke", action="store_true", help="test this script on the CPU (TRITON_INTERPRET=1)")
    args = parser.parse_args()
    global CASES, DEVICE, L2_BYTES
    if args.smoke:
        CASES, DEVICE = [("W32 b128", 8, (32, 24), 1)], "cpu"  # named as the target so every path runs
        L2_BYTES = 2**20
    elif not torch.cuda.is_available():
        sys.exit("gpu_triton: needs a CUDA GPU")
    else:
        L2_BYTES = torch.cuda.get_device_properties(0).L2_cache_size
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    hrnet_fast.set_backend("triton")  # fails here, with the reason, if the backend cannot run
    hrnet_fast.set_backend(None)

    state = {"start": time.perf_counter(), "budget": args.budget_s, "copy_GBps": copy_gbps()}
    results = {
        "env": {
            "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (smoke test)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "python": platform.python_version(),
            "header": environment(torch.device(DEVICE), " ".join(["python benchmarks/gpu_triton.py", *sys.argv[1:]])),
        },
        "copy_GBps": state["copy_GBps"],
        "level1": [],
        "level2": [],
    }
    print(f"{results['env']}\ncopy bandwidth {state['copy_GBps']:.0f} GB/s", flush=True)
    # The target case first, so that its torch.compile comparison fits the time budget.
    order = sorted(itertools.product(CASES, FLAVOURS), key=lambda cf: (cf[0][0], cf[1][0]) != TARGET)
    for case, flavour in order:
        if args.quick and (case[0], flavour[0]) != TARGET:
            continue
        compile_on = flavour[0] == "fp16 CL" or args.compile_all
        for mode in ("nearest", "bilinear"):  # torch.compile of level 1 for nearest only (compile time)
            row = level1(case, flavour, mode, compile_on and mode == "nearest", state)
            results["level1"].append(row)
            print(f"L1 {row}", flush=True)
        row = level2(case, flavour, "nearest", compile_on, state)
        results["level2"].append(row)
        print(f"L2 {row}", flush=True)
    if args.sweep:
        target = next(c for c in CASES if c[0] == TARGET[0]), next(f for f in FLAVOURS if f[0] == TARGET[1])
        results["sweep"] = sweep(*target)
    results["targets"] = targets(results)
    results["elapsed_s"] = time.perf_counter() - state["start"]
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (args.out_dir / "results.md").write_text(table)
    print(table)
    print(f"done in {results['elapsed_s']:.0f} s")
    return 0 if all(r["correct"] for r in results["level1"] + results["level2"]) else 1


if __name__ == "__main__":
    sys.exit(main())
