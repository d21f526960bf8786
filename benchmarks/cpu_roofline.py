"""How close each engine in the CPU peer runs comes to the CPU's multiply-accumulate peak.

1. The peak: ``cpu_peak.c`` (compiled here with ``cc -O2 -march=native -fopenmp``) runs independent
   chains of ``vfmadd231ps`` (fp32; AVX-512 or AVX2) and ``vdpbf16ps`` (bf16 pairs into fp32; with
   AVX512-BF16) on every thread, in registers; the best of ``--reps`` runs, in 1e9 multiply-adds per
   second (GMAC/s). On the shared 2-core CI machine it moves by a few percent between runs.
2. The work: the multiply-adds of HRNet-W32 pose's convolutions at 256x192 (counted from the model's
   ``Conv2d`` layers on one image: the direct convolutions' count, so an engine running Winograd
   does fewer and may in principle pass 100%).
3. Every ``hrnet-fast bench --suite model --peers`` file of that model in ``benchmarks/results/``
   (``cpu-*w32-pose-b*-peers*.json``) measured on this CPU (the same device name): each engine's
   median time as GMAC/s and as a share of the peak of its dtype. The peers were timed in their own
   runs, the peak in this one: the machine is shared, so a slow spell in either moves the share by a
   few percent.

Writes NAME.json and NAME.md (default cpu_roofline) to --out when given.

    python benchmarks/cpu_roofline.py [--threads N] [--reps 5] [--out DIR] [--name cpu_roofline]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hrnet_fast import HRNet
from hrnet_fast.bench import results
from hrnet_fast.bench.report import table
from hrnet_fast.bench.results import add_report_arguments, environment, write_report

HERE = Path(__file__).parent
PEER_FILES = "cpu-*w32-pose-b*-peers*.json"
CASE = re.compile(r"pose w32 256x192 b(?P<batch>\d+) (?P<dtype>\w+)")
DTYPES = {"float32": "fp32", "bfloat16": "bf16"}


def measure_peak(threads: int, reps: int) -> dict[str, float | None]:
    """The best fp32 and bf16 GMAC/s of ``reps`` runs of cpu_peak.c on ``threads`` threads (bf16 None
    without AVX512-BF16)."""
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "cpu_peak"
        build = ["cc", "-O2", "-march=native", "-fopenmp", str(HERE / "cpu_peak.c"), "-o", str(binary)]
        done = subprocess.run(build, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"cannot build cpu_peak.c ({' '.join(build)}):\n{done.stderr.strip()}")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        runs = [
            json.loads(subprocess.run([binary], env=env, capture_output=True, text=True, check=True).stdout)
            for _ in range(reps)
        ]
    return {
        dtype: max(run[f"{dtype}_gmac_per_s"] for run in runs) if runs[0][f"{dtype}_gmac_per_s"] else None
        for dtype in ("fp32", "bf16")
    }


def conv_macs(module: torch.nn.Module, *inputs) -> int:
    """Multiply-adds of the Conv2d layers that one forward of ``module`` on ``inputs`` runs."""
    total = 0

    def count(conv: torch.nn.Conv2d, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * conv.weight[0].numel()

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        module(*inputs)
    for hook in hooks:
        hook.remove()
    return total


def conv_macs_per_image() -> int:
    """Multiply-adds of HRNet-W32 pose's Conv2d layers on one 256x192 image."""
    return conv_macs(HRNet("w32", head="pose").eval(), torch.zeros(1, 3, 256, 192))


def engine_rows(folder: Path, macs: int, peak: dict[str, float | None], device_name: str) -> list[dict]:
    """One row per engine timed in each peers file of ``folder`` measured on ``device_name``."""
    rows = []
    for path in sorted(folder.glob(PEER_FILES)):
        meta, found = results.load_json(path)
        if meta.get("device_name") != device_name:
            continue
        for r in found:
            case = CASE.match(r.case)
            if case is None or r.ms is None:
                continue
            dtype = DTYPES[case["dtype"]]
            gmacs = macs * int(case["batch"]) / (r.ms / 1e3) / 1e9
            rows.append(
                {
                    "file": path.name,
                    "batch": int(case["batch"]),
                    "dtype": dtype,
                    "engine": r.backend,
                    "ms": r.ms,
                    "gmac_per_s": gmacs,
                    "pct_of_peak": 100 * gmacs / peak[dtype] if peak[dtype] else None,
                }
            )
    return rows


COLUMNS = [
    ("file", "file", ""),
    ("batch", "batch", ""),
    ("dtype", "dtype", ""),
    ("engine", "engine", ""),
    ("ms", "ms", ".2f"),
    ("gmac_per_s", "GMAC/s", ".0f"),
    ("pct_of_peak", "% of peak", ".0f"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for the peak (default: all CPUs)")
    parser.add_argument("--reps", type=int, default=5, help="runs of the peak kernel; the best counts")
    add_report_arguments(parser, "cpu_roofline")
    args = parser.parse_args(argv)
    env = environment(torch.device("cpu"), " ".join(["python benchmarks/cpu_roofline.py", *(argv or sys.argv[1:])]))
    peak = measure_peak(args.threads, args.reps)
    macs = conv_macs_per_image()
    rows = engine_rows(HERE / "results", macs, peak, env["device_name"])
    bf16 = f"{peak['bf16']:.0f} GMAC/s bf16 (vdpbf16ps)" if peak["bf16"] else "no bf16 peak (no AVX512-BF16)"
    setup = (
        f"{env['device_name']}, {args.threads} threads: peak {peak['fp32']:.0f} GMAC/s fp32 (vfmadd231ps), "
        f"{bf16}, best of {args.reps} runs; HRNet-W32 pose 256x192: "
        f"{macs / 1e9:.3f} GMAC per image in its convolutions"
    )
    text = table(rows, COLUMNS)
    print(f"{setup}\n\n{text}")
    if args.out:
        data = {"setup": setup, "environment": env, "peak_gmac_per_s": peak, "macs_per_image": macs, "rows": rows}
        write_report(
            args.out,
            args.name,
            data,
            "Share of the CPU's multiply-accumulate peak (benchmarks/cpu_roofline.py)",
            env,
            f"\n{setup}.\n\nEach engine of the peer runs above on this CPU (`{PEER_FILES}`, timed in their own "
            "runs): its median as the model's direct-convolution multiply-adds per second and as a share of the "
            f"peak of its dtype (Winograd does fewer multiply-adds, so its share is effective):\n\n```\n{text}\n```\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
