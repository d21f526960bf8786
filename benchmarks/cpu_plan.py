"""``optimize()``'s CPU op plans (``hrnet_fast/nn/op_plan.py``), side by side in one run with the
same engine running its forward as Python (``cpu_plan=False``), replaying its plan in Python
(``engine.plans.native = False``), in C++ (``csrc/runtime/plan_replay.cpp``) with every op on all
threads (``engine.plans.lanes = False``) and in C++ with lanes (``hrnet_fast/nn/plan_lanes.py``:
independent calls single-threaded side by side where measured faster when the plan was recorded;
the default; the row says how many calls it put on lanes).

HRNet-W32 pose forward, 256x192, channels_last, backend cpp, batch 1 and 8, float32 and bfloat16.
Calls alternate (python, python replay, plan, python, ...) so load from other processes hits all
alike; medians (and minima) over the rounds. All must give the same outputs bit for bit (the plans
run the same ops); the largest differences are reported. Writes cpu_plan.json and cpu_plan.md to
--out when given.

    python benchmarks/cpu_plan.py [--threads N] [--reps 15] [--out DIR]
"""

from __future__ import annotations

import argparse
import os

import torch
from cpu_ext import alternate, cpp_run_setup, runner_columns, summary_row

from hrnet_fast import HRNet, optimize
from hrnet_fast.bench.report import table
from hrnet_fast.bench.results import add_report_arguments, write_report
from hrnet_fast.testing import randomize_batchnorm_

CASES = ((1, torch.float32), (1, torch.bfloat16), (8, torch.float32), (8, torch.bfloat16))


def bench(reps: int) -> list[dict]:
    torch.manual_seed(0)
    model = randomize_batchnorm_(HRNet("w32", head="pose")).eval()
    rows = []
    for batch, dtype in CASES:
        engines = {
            "python": optimize(model, dtype=dtype, backend="cpp", cpu_plan=False),
            "replay": optimize(model, dtype=dtype, backend="cpp"),
            "plan": optimize(model, dtype=dtype, backend="cpp"),
            "lanes": optimize(model, dtype=dtype, backend="cpp"),
        }
        engines["replay"].plans.native = False
        engines["plan"].plans.lanes = False
        x = torch.randn(batch, 3, 256, 192).to(dtype).contiguous(memory_format=torch.channels_last)
        fns = {name: (lambda e=engine, x=x: e(x)) for name, engine in engines.items()}
        with torch.inference_mode():
            samples = alternate(fns, reps, warmup=3)  # the plan's first call runs as Python, its second records
            outputs = {name: fn() for name, fn in fns.items()}
        for name in ("replay", "plan", "lanes"):
            plans = engines[name].plans
            assert plans.num_plans == 1, f"the {name} engine did not record its plan"
            assert plans.num_native_plans == plans.native, f"the {name} engine's plan replays in the wrong place"
        laned = engines["lanes"].plans.laned_calls
        base = {"batch": batch, "dtype": str(dtype).removeprefix("torch."), "laned_calls": laned}
        rows.append(row := summary_row(samples, outputs, outputs["python"], base))
        print(f"  b{batch} {row['dtype']}: " + ", ".join(f"{name} {row[name + '_ms']:.2f} ms" for name in engines))
    return rows


COLUMNS = [
    *runner_columns(("python", "python"), ("replay", "py replay"), ("plan", "plan"), ("lanes", "lanes")),
    ("laned_calls", "laned calls", "d"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--reps", type=int, default=15, help="alternating rounds per case")
    add_report_arguments(parser, "cpu_plan")
    args = parser.parse_args(argv)
    env, setup, load_before = cpp_run_setup(
        "cpu_plan.py", argv, args.threads, f"medians of {args.reps} alternating rounds"
    )
    print(setup)
    text = table(rows := bench(args.reps), COLUMNS)
    print(f"\nHRNet-W32 pose forward, optimize() channels_last: Python, plan in Python, in C++, on lanes\n{text}")
    env["load"] = (load_before, os.getloadavg()[0])
    if args.out:
        results = {"setup": setup, "environment": env, "model": rows}
        write_report(
            args.out,
            args.name,
            results,
            "optimize()'s CPU op plans (benchmarks/cpu_plan.py)",
            env,
            f"\n{setup}.\n\nHRNet-W32 pose forward, 256x192, optimize() (backend cpp, channels_last) running its "
            "forward as Python (cpu_plan=False), replaying its op plan in Python (plans.native = False), in C++ "
            "with every op on all threads (plans.lanes = False) and in C++ with lanes where measured faster (the "
            f"default):\n\n```\n{text}\n```\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
