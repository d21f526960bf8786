"""The CUDA C++ backend on a GPU, in one run: build, correctness, then level-1 op timings.

1. Builds (or loads) hrnet_fast._C with its CUDA kernels and reports how long that took.
2. Checks the CUDA kernels against the reference on the GPU: upsample_sum and upsample_concat, forward
   and backward, fp32/fp16/bf16, NCHW and channels_last, nearest/bilinear/align_corners, odd sizes
   and channel counts that rule out 16-byte vectors, batch 1; outputs poisoned with NaN (torch's
   deterministic mode); autograd against autograd through the reference; a CUDA-graph capture (which
   fails if a kernel is launched on any stream but the current one).
3. Times the level-1 op of every output branch of the last fusion step of HRNet-W32 (256x192, batch 32
   and 128) and HRNet-W48 (384x288, batch 32), fp16 channels_last and fp32 NCHW, nearest: CUDA events
   around back-to-back calls, median of repeats after warm-up, inputs rotated through enough copies to
   exceed twice the L2 cache (as the driver reports it) so every call reads from memory; GB/s (bytes read once + written
   once) against the device-to-device copy bandwidth measured in the same run, side by side with the
   Triton level-1 op (torch.ops.hrnet_fast.upsample_sum_triton) when it is registered, and eager.

Writes gpu_cuda.json and gpu_cuda.md into the output folder; exits 1 if a correctness check failed.
``--device cpu`` runs steps 1 and 2 on the CPU kernels instead (to try the script without a GPU).

    python benchmarks/gpu_cuda.py OUT_DIR [--repeats 15] [--calls 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import hrnet_fast
from hrnet_fast import _ext
from hrnet_fast.bench.report import table
from hrnet_fast.bench.results import environment, write_report
from hrnet_fast.bench.shapes import fusion_shapes
from hrnet_fast.bench.timer import cache_bytes, copy_bandwidth
from hrnet_fast.ops import BackendUnavailableError, resolve_backend
from hrnet_fast.ops import upsample_concat_op as concat_mod
from hrnet_fast.ops import upsample_sum_op as sum_mod
from hrnet_fast.testing import judge

INPUT_SIZES = {"w32": (256, 192), "w48": (384, 288)}
TIMED = [("w32", 32), ("w32", 128), ("w48", 32)]
DTYPES = {
    "fp16-cl": (torch.float16, torch.channels_last),
    "fp32-nchw": (torch.float32, torch.contiguous_format),
}
DEVICE = "cuda"  # --device


def randn(shape, dtype=torch.float32, fmt=torch.contiguous_format):
    return torch.randn(shape, device=DEVICE, dtype=dtype).contiguous(memory_format=fmt)


def describe(dtype, fmt, mode, ac) -> str:
    layout = "cl" if fmt == torch.channels_last else "nchw"
    return f"{str(dtype).removeprefix('torch.')} {layout} {mode}{'-ac' if ac else ''}"


# ---- 1. build ----------------------------------------------------------------------------------


def build() -> dict:
    """Builds or loads the cpp backend and says whether it serves DEVICE (and why not)."""
    start = time.perf_counter()
    try:
        reason = None if resolve_backend("cpp", torch.device(DEVICE)) == "cpp" else "not selected"
    except BackendUnavailableError as exc:
        reason = str(exc)
    seconds = time.perf_counter() - start
    nvcc = _ext.cuda_home()
    if nvcc is not None:
        version = subprocess.run([f"{nvcc}/bin/nvcc", "--version"], capture_output=True, text=True).stdout
        nvcc = version.strip().splitlines()[-1]
    info = {"build_or_load_s": seconds, "backend": reason or "available", "nvcc": nvcc}
    print(f"extension: backend cpp on {DEVICE}: {info['backend']} after {seconds:.1f} s ({nvcc})")
    return info


# ---- 2. correctness ------------------------------------------------------------------------------


class Checks:
    def __init__(self):
        self.results: list[dict] = []

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.results.append({"check": name, "ok": ok, "detail": detail})
        if not ok:
            print(f"  FAIL {name}: {detail}")

    def compare(self, name: str, got, ref, exact, **options) -> None:
        """The tests' rule (hrnet_fast.testing.judge, with its ``options``)."""
        try:
            verdict = judge(got, ref, exact, **options)
            self.record(name, verdict.ok, str(verdict))
        except Exception as exc:
            self.record(name, False, f"{type(exc).__name__}: {exc}")

    @property
    def failed(self) -> int:
        return sum(not r["ok"] for r in self.results)


def _f64(ts):
    return [t.double() for t in ts]


SUM_CASES = [  # mode, align_corners, relu, base shape, low sizes, number of same addends
    ("nearest", False, True, (2, 32, 64, 48), [(32, 24), (16, 12), (8, 6)], 1),
    ("nearest", False, True, (1, 5, 13, 11), [(7, 6), (20, 17)], 2),
    ("bilinear", False, True, (3, 64, 33, 25), [(17, 13), (9, 7)], 1),
    ("bilinear", True, False, (2, 24, 9, 7), [(5, 4), (1, 1), (9, 7)], 0),
]


def check_sum(checks: Checks, dtype, fmt, case) -> None:
    mode, ac, relu, shape, low_hw, num_same = case
    ops = torch.ops.hrnet_fast
    base, same = randn(shape, dtype, fmt), [randn(shape, dtype, fmt) for _ in range(num_same)]
    low = [randn((shape[0], shape[1], *hw), dtype, fmt) for hw in low_hw]
    label = f"upsample_sum {describe(dtype, fmt, mode, ac)} {shape}"
    out = ops.upsample_sum_cpp(base, same, low, mode, ac, relu)
    ref = sum_mod.upsample_sum_reference(base, same, low, mode, ac, relu)
    exact = sum_mod.upsample_sum_reference(base.double(), _f64(same), _f64(low), mode, ac, relu)
    checks.compare(label, out, ref, exact)
    grad, low_sizes = randn(shape, dtype, fmt), [s for t in low for s in t.shape[-2:]]
    got = ops.upsample_sum_backward_cpp(grad, out, low_sizes, mode, ac, relu)
    want = sum_mod.upsample_sum_backward_reference(grad, out, low_sizes, mode, ac, relu)
    exact = sum_mod.upsample_sum_backward_reference(grad.double(), out.double(), low_sizes, mode, ac, relu)
    triples = zip([got[0], *got[1]], [want[0], *want[1]], [exact[0], *exact[1]], strict=True)
    for k, triple in enumerate(triples):
        checks.compare(f"{label} backward[{k}]", *triple)


def check_concat(checks: Checks, dtype, fmt, mode, ac) -> None:
    ops = torch.ops.hrnet_fast
    xs = [randn(s, dtype, fmt) for s in [(2, 48, 96, 72), (2, 96, 48, 36), (2, 5, 24, 18), (2, 384, 12, 9)]]
    label = f"upsample_concat {describe(dtype, fmt, mode, ac)}"
    # align_corners: F.interpolate's source positions d * (in - 1) / (out - 1), computed in the data's
    # precision as the kernels do, put even the float32 reference ~1.5e-5 from float64 at these sizes
    # (the CPU kernel's error equals it), beyond the 2e-6 tolerance: judged against its own error.
    rule = {"twice_reference": True} if ac else {}
    out = ops.upsample_concat_cpp(xs, mode, ac)
    ref = concat_mod.upsample_concat_reference(xs, mode, ac)
    checks.compare(label, out, ref, concat_mod.upsample_concat_reference(_f64(xs), mode, ac), **rule)
    grad = torch.randn_like(out)
    channels, hw = [x.shape[1] for x in xs], [s for x in xs for s in x.shape[-2:]]
    got = ops.upsample_concat_backward_cpp(grad, channels, hw, mode, ac)
    want = concat_mod.upsample_concat_backward_reference(grad, channels, hw, mode, ac)
    exact = concat_mod.upsample_concat_backward_reference(grad.double(), channels, hw, mode, ac)
    for k, triple in enumerate(zip(got, want, exact, strict=True)):
        checks.compare(f"{label} backward[{k}]", *triple, **rule)


def check_autograd(checks: Checks) -> None:
    from hrnet_fast.ops import upsample_sum

    base = randn((2, 16, 21, 17)).requires_grad_()
    low = [randn((2, 16, 11, 9)).requires_grad_()]
    out = upsample_sum(base, [], low, mode="bilinear", backend="cpp")
    ref = sum_mod.upsample_sum_reference(base, [], low, "bilinear", False, True)
    g = torch.randn_like(out)
    got, want = torch.autograd.grad(out, [base, *low], g), torch.autograd.grad(ref, [base, *low], g)
    ok = all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(got, want, strict=True))
    checks.record(f"autograd through upsample_sum (cpp, {DEVICE}) vs the reference", ok, "fp32 gradients")


def check_graph_capture(checks: Checks) -> None:
    name = "CUDA-graph capture and replay (current-stream launches)"
    try:
        x = randn((4, 32, 64, 48), torch.float16, torch.channels_last)
        y = randn((4, 32, 32, 24), torch.float16, torch.channels_last)
        graph, side = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.cuda.stream(side):  # warm-up outside the capture, on a side stream
            torch.ops.hrnet_fast.upsample_sum_cpp(x, [], [y], "nearest", False, True)
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            captured = torch.ops.hrnet_fast.upsample_sum_cpp(x, [], [y], "nearest", False, True)
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        ok = torch.equal(captured, sum_mod.upsample_sum_reference(x, [], [y], "nearest", False, True))
        checks.record(name, ok, "fp16 channels_last, replayed on new data")
    except Exception as exc:
        checks.record(name, False, f"{type(exc).__name__}: {exc}")


def check_all() -> Checks:
    checks = Checks()
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # fresh tensors are NaN: poisoned outputs
    try:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for fmt in (torch.contiguous_format, torch.channels_last):
                for case in SUM_CASES:
                    check_sum(checks, dtype, fmt, case)
                for mode, ac in (("nearest", False), ("bilinear", False), ("bilinear", True)):
                    check_concat(checks, dtype, fmt, mode, ac)
    finally:
        torch.use_deterministic_algorithms(was)
    check_autograd(checks)
    if DEVICE == "cuda":
        check_graph_capture(checks)
    print(f"correctness: {len(checks.results) - checks.failed} of {len(checks.results)} checks pass")
    return checks


# ---- 3. timings ----------------------------------------------------------------------------------


def gpu_seconds(fn, calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the GPU time of ``calls`` back-to-back calls, per call."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3 / calls)
    return statistics.median(samples)


def triton_op():
    """The triton backend's level-1 op, when that backend is usable here."""
    hrnet_fast.backend_status()  # probes every backend, which defines the ops of the usable ones
    return getattr(torch.ops.hrnet_fast, "upsample_sum_triton", None)


def time_op(op, sets, num_same: int, calls: int, repeats: int) -> float:
    """GPU seconds per call of op(base, same, low, "nearest", False, True), cycling through ``sets``."""
    turn = itertools.count()

    def call():
        t = sets[next(turn) % len(sets)]
        return op(t[0], t[1 : 1 + num_same], t[1 + num_same :], "nearest", False, True)

    return gpu_seconds(call, calls, repeats)


def time_all(calls: int, repeats: int) -> tuple[float, list[dict]]:
    copy_bw = copy_bandwidth(torch.device("cuda"), nbytes=2**30)
    print(f"copy bandwidth: {copy_bw / 1e12:.2f} TB/s (1 GiB device-to-device, read + write)")
    triton = triton_op()
    impls = {"cuda": torch.ops.hrnet_fast.upsample_sum_cpp, "eager": sum_mod.upsample_sum_reference}
    if triton is not None:
        impls["triton"] = triton
    rows = []
    for arch, batch in TIMED:
        for dname, (dtype, fmt) in DTYPES.items():
            for branch, problem in enumerate(fusion_shapes(arch, INPUT_SIZES[arch], batch)):
                shapes = [problem.base] * (1 + problem.num_same) + list(problem.low)
                nbytes = problem.elements() * dtype.itemsize  # inputs + the output
                copies = max(1, -(-2 * cache_bytes(torch.device("cuda")) // nbytes))
                sets = [[randn(s, dtype, fmt) for s in shapes] for _ in range(copies)]
                row = {"arch": arch, "batch": batch, "dtype": dname, "branch": branch, "MB": nbytes / 1e6}
                for name, op in impls.items():
                    try:
                        seconds = time_op(op, sets, problem.num_same, calls, repeats)
                        row[f"{name}_us"] = seconds * 1e6
                        row[f"{name}_copy_pct"] = 100 * nbytes / seconds / copy_bw
                    except Exception as exc:  # e.g. a Triton op with another signature
                        row[f"{name}_us"] = float("nan")
                        row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:200]
                del sets
                rows.append(row)
                print(
                    f"  {arch} b{batch} {dname} branch {branch}: {nbytes / 1e6:7.1f} MB  "
                    + "  ".join(f"{n} {row[f'{n}_us']:8.1f} us" for n in impls)
                    + f"  cuda {row.get('cuda_copy_pct', float('nan')):.0f}% of copy"
                )
    return copy_bw, rows


def main(argv: list[str] | None = None) -> int:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu_cuda.json and gpu_cuda.md")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch")
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU"
    setup = f"{name}, torch {torch.__version__}, Python {sys.version.split()[0]}"
    print(setup)
    info = build()
    if info["backend"] != "available":
        (args.out / "gpu_cuda.json").write_text(json.dumps({"setup": setup, **info}, indent=2))
        print(f"the {DEVICE} backend is unavailable; nothing to check", file=sys.stderr)
        return 1
    checks = check_all()
    if DEVICE != "cuda":
        return 1 if checks.failed else 0
    copy_bw, rows = time_all(args.calls, args.repeats)
    columns = [
        ("arch", "arch", "s"),
        ("batch", "batch", "d"),
        ("dtype", "dtype", "s"),
        ("branch", "branch", "d"),
        ("MB", "MB moved", ".1f"),
        ("cuda_us", "cuda us", ".1f"),
        ("cuda_copy_pct", "% copy BW", ".0f"),
        ("eager_us", "eager us", ".1f"),
    ]
    if any("triton_us" in r for r in rows):
        columns += [("triton_us", "triton us", ".1f"), ("triton_copy_pct", "triton % copy", ".0f")]
    timings = table(rows, columns)
    print(timings)
    results = {
        "setup": setup,
        **info,
        "copy_bandwidth_TBps": copy_bw / 1e12,
        "checks_failed": checks.failed,
        "checks": checks.results,
        "timings": rows,
    }
    failed = [f"- {r['check']}: {r['detail']}" for r in checks.results if not r["ok"]]
    write_report(
        args.out,
        "gpu_cuda",
        results,
        "CUDA C++ backend (benchmarks/gpu_cuda.py)",
        environment(torch.device(DEVICE), " ".join(["python benchmarks/gpu_cuda.py", *sys.argv[1:]])),
        f"\nExtension: {info['backend']} after {info['build_or_load_s']:.1f} s ({info['nvcc']}).\n\n"
        f"Correctness: {len(checks.results) - checks.failed} of {len(checks.results)} checks pass.\n"
        + "".join(f"{line}\n" for line in failed)
        + f"\nCopy bandwidth {copy_bw / 1e12:.2f} TB/s. Level-1 op (nearest, relu), GPU time per call, "
        f"median of {args.repeats} x {args.calls} calls, inputs rotated over > 2x L2:\n\n"
        f"```\n{timings}\n```\n",
    )
    return 1 if checks.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
