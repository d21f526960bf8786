"""Level 2 of the cpp backend on a GPU: the CUDA ``fusion_branch`` kernel, checked and timed on whole
stage-4 fusion steps.

    python benchmarks/gpu_level2.py OUT_DIR [--budget-s 240] [--device cpu]

1. Correctness: the stage-4 fusion step (MultiResolutionFusion in eval, BatchNorm randomized, every
   output branch) at level 2 on backend cpp (BN folded, one fusion_branch launch per branch)
   against the eager reference module with BN: W32 pose (256x192, nearest), W48 pose (384x288,
   nearest) and W48 seg (512x1024, bilinear) shapes at batch 1, 32 and 128, fp32/fp16/bf16, NCHW
   and channels_last. Outputs are poisoned (deterministic mode fills fresh tensors with NaN) and
   judged by hrnet_fast.testing against the float64 module (fp32: the tolerance of long dot
   products, no TF32 anywhere; fp16/bf16: at most twice the reference's own error). Also: the
   module picks level 2 by itself, and a CUDA-graph capture of the step replays right.
2. Timings of steps (CUDA events around each call, median of 20 after warm-up, inputs rotated so each
   call reads from memory): the module on backend cpp (level 2) beside triton (level 2), the eager
   reference and ``torch.compile`` of the reference module (inductor, default mode; compiled for the
   timed cases in order while under 60% of --budget-s). The target case comes first: W32 fp16
   channels_last batch 128, where cpp should be within 10% of triton or faster and at least 5x eager.

Writes gpu_level2.json and gpu_level2.md to OUT_DIR; exits 1 if a check failed. ``--device cpu``
runs both parts with the CPU kernels on inputs an eighth the size, batch 2, fp32 and bf16, one timed
case and no torch.compile or triton (to test this script without a GPU: tests/test_gpu_scripts.py).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from gpu_cuda import Checks

import hrnet_fast
from hrnet_fast.bench.report import table
from hrnet_fast.bench.results import environment, write_report
from hrnet_fast.bench.shapes import branch_sizes, stage_widths
from hrnet_fast.bench.timer import Rotation, StopRule, time_fn
from hrnet_fast.nn import MultiResolutionFusion
from hrnet_fast.nn.folded_fusion import folded_forward, use_level2
from hrnet_fast.testing import randomize_batchnorm_

STEPS = {  # name: arch, input size, fusion upsampling
    "w32-pose": ("w32", (256, 192), "nearest"),
    "w48-pose": ("w48", (384, 288), "nearest"),
    "w48-seg": ("w48", (512, 1024), "bilinear"),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}
BATCHES = {"cuda": (1, 32, 128), "cpu": (2,)}
CHECKED = {"cuda": tuple(DTYPES), "cpu": ("fp32", "bf16")}  # fp16 convs are slow on a CPU
TIMED = {  # step, batch, dtype, layout; the target first
    "cuda": [
        ("w32-pose", 128, "fp16", "cl"),
        ("w32-pose", 32, "fp16", "cl"),
        ("w32-pose", 32, "fp32", "nchw"),
        ("w48-seg", 8, "fp16", "cl"),
    ],
    "cpu": [("w32-pose", 2, "fp32", "cl")],
}
SCALE = {"cuda": 1, "cpu": 8}  # input sizes divided by this


class Step:
    """One stage-4 fusion step: the module (BN randomized, eval) and its input shapes."""

    def __init__(self, name: str, device: torch.device):
        arch, (h, w), mode = STEPS[name]
        scale = SCALE[device.type]
        self.name, self.device = name, device
        self.widths = stage_widths(arch, 4)
        self.sizes = branch_sizes(h // scale, w // scale)
        torch.manual_seed(0)
        self.module = randomize_batchnorm_(MultiResolutionFusion(self.widths, upsample=mode)).to(device).eval()

    def module_on(self, backend: str, dtype: torch.dtype) -> MultiResolutionFusion:
        fuse = copy.deepcopy(self.module).to(dtype)
        fuse.backend = backend
        return fuse

    def inputs(self, batch: int, dtype: torch.dtype, fmt=torch.contiguous_format) -> list[torch.Tensor]:
        return [
            torch.randn(batch, c, *hw, device=self.device).to(dtype).contiguous(memory_format=fmt)
            for c, hw in zip(self.widths, self.sizes, strict=True)
        ]


# ---- 1. correctness ------------------------------------------------------------------------------


def check_step(checks: Checks, step: Step, batch: int, dname: str) -> None:
    dtype = DTYPES[dname]
    fuse, ref = step.module_on("cpp", dtype), step.module_on("reference", dtype)
    exact_module = copy.deepcopy(ref).double()
    xs = step.inputs(batch, dtype)
    with torch.inference_mode():
        exact = exact_module([x.double() for x in xs])
        for lname, fmt in LAYOUTS.items():
            label = f"{step.name} b{batch} {dname} {lname}"
            laid = [x.contiguous(memory_format=fmt) for x in xs]
            if not use_level2(fuse, laid, "cpp"):
                checks.record(f"{label}: the module runs level 2", False, "it chose level 1")
            try:
                got = folded_forward(fuse, laid, "cpp")
            except Exception as exc:
                checks.record(label, False, f"{type(exc).__name__}: {exc}")
                continue
            want = ref(laid)
            for i, (a, b, e) in enumerate(zip(got, want, exact, strict=True)):
                checks.compare(f"{label} branch {i}", a, b, e, tol=1e-5 if dtype == torch.float32 else None)
                if a.stride() != laid[i].stride():
                    checks.record(f"{label} branch {i} layout", False, f"strides {a.stride()} != {laid[i].stride()}")


def check_graph_capture(checks: Checks, step: Step) -> None:
    name = "CUDA-graph capture and replay of the level-2 step (current-stream launches)"
    try:
        fuse, ref = step.module_on("cpp", torch.float16), step.module_on("reference", torch.float16)
        xs = step.inputs(4, torch.float16, torch.channels_last)
        graph, side = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.inference_mode():
            with torch.cuda.stream(side):  # warm-up (folds the weights) outside the capture
                fuse(xs)
            torch.cuda.synchronize()
            with torch.cuda.graph(graph):
                captured = fuse(xs)
            for x in xs:
                x.normal_()
            graph.replay()
            torch.cuda.synchronize()
            exact = copy.deepcopy(ref).double()([x.double() for x in xs])
            ok = all(c.isfinite().all() for c in captured)
            for i, (a, b, e) in enumerate(zip(captured, ref(xs), exact, strict=True)):
                checks.compare(f"{name}, branch {i}", a, b, e)
        checks.record(name, ok, "fp16 channels_last, replayed on new data")
    except Exception as exc:
        checks.record(name, False, f"{type(exc).__name__}: {exc}")


def check_all(device: torch.device) -> Checks:
    checks = Checks()
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # fresh tensors are NaN: poisoned outputs
    try:
        for name in STEPS:
            step = Step(name, device)
            for batch in BATCHES[device.type]:
                for dname in CHECKED[device.type]:
                    check_step(checks, step, batch, dname)
            print(f"  {name}: {len(checks.results) - checks.failed} of {len(checks.results)} checks pass so far")
    finally:
        torch.use_deterministic_algorithms(was)
    if device.type == "cuda":
        check_graph_capture(checks, Step("w32-pose", device))
    print(f"correctness: {len(checks.results) - checks.failed} of {len(checks.results)} checks pass")
    return checks


# ---- 2. timings ----------------------------------------------------------------------------------


def time_case(device: torch.device, case: tuple, compile_on: bool) -> dict:
    name, batch, dname, lname = case
    step, dtype, fmt = Step(name, device), DTYPES[dname], LAYOUTS[lname]
    nbytes = 2 * sum(x.numel() * x.element_size() for x in step.inputs(batch, dtype))  # read once, write once
    rotation = Rotation(lambda: (step.inputs(batch, dtype, fmt),), nbytes, device)
    runners = {"eager": step.module_on("reference", dtype), "cpp": step.module_on("cpp", dtype)}
    if device.type == "cuda" and hrnet_fast.backend_status()["triton"] is None:
        runners["triton"] = step.module_on("triton", dtype)
    if compile_on:
        runners["compile"] = torch.compile(step.module_on("reference", dtype), dynamic=False)
    row = {"step": name, "batch": batch, "dtype": dname, "layout": lname, "MB": nbytes / 1e6}
    with torch.inference_mode():
        for runner, fn in runners.items():
            try:
                timing = time_fn(lambda fn=fn: fn(*rotation()), device, warmup=3, rule=StopRule.fixed(20))
                row[f"{runner}_ms"] = timing.median_ms
            except Exception as exc:  # e.g. a compile that fails: report it, time the others
                row[f"{runner}_ms"] = None
                row[f"{runner}_error"] = f"{type(exc).__name__}: {exc}"[:300]
    for runner in ("eager", "triton", "compile"):
        cpp, other = row.get("cpp_ms"), row.get(f"{runner}_ms")
        row[f"cpp_vs_{runner}"] = other / cpp if cpp and other else None
    print("  " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return row


def time_all(device: torch.device, budget_s: float, start: float) -> list[dict]:
    rows = []
    for case in TIMED[device.type]:
        compile_on = device.type == "cuda" and time.perf_counter() - start < 0.6 * budget_s
        rows.append(time_case(device, case, compile_on))
    return rows


COLUMNS = [
    ("step", "step", "s"),
    ("batch", "batch", "d"),
    ("dtype", "dtype", "s"),
    ("layout", "layout", "s"),
    ("MB", "MB in+out", ".1f"),
    ("cpp_ms", "cpp ms", ".3f"),
    ("triton_ms", "triton ms", ".3f"),
    ("eager_ms", "eager ms", ".3f"),
    ("compile_ms", "compile ms", ".3f"),
    ("cpp_vs_triton", "cpp vs triton", ".2f"),
    ("cpp_vs_eager", "cpp vs eager", ".2f"),
    ("cpp_vs_compile", "cpp vs compile", ".2f"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu_level2.json and gpu_level2.md")
    parser.add_argument("--budget-s", type=float, default=240, help="no new torch.compile after 60%% of it")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch")
    built = time.perf_counter()
    if "cpp" not in hrnet_fast.available_backends(device):  # builds the extension on first use
        raise SystemExit(f"backend cpp does not run on {device}: {hrnet_fast.backend_status()['cpp']}")
    start = time.perf_counter()
    print(f"backend cpp on {device} ready after {start - built:.1f} s (build or load)")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 references
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(device, " ".join(["python benchmarks/gpu_level2.py", *(argv or sys.argv[1:])]))
    checks = check_all(device)
    rows = time_all(device, args.budget_s, start)
    timings = table(rows, [(k, h, f) for k, h, f in COLUMNS if any(k in r for r in rows)])
    print(timings)
    failed = [f"- {r['check']}: {r['detail']}" for r in checks.results if not r["ok"]]
    write_report(
        args.out,
        "gpu_level2",
        {"environment": env, "checks": checks.results, "timings": rows},
        "Level 2 on backend cpp (benchmarks/gpu_level2.py)",
        env,
        f"\nCorrectness: {len(checks.results) - checks.failed} of {len(checks.results)} checks pass.\n"
        + "".join(f"{line}\n" for line in failed)
        + "\nWhole stage-4 fusion step per call (CUDA events, median of 20, inputs rotated over > 2x L2):\n\n"
        + f"```\n{timings}\n```\n",
    )
    return 1 if checks.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
