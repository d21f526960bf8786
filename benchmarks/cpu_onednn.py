"""Direct oneDNN convolutions (``hrnet_fast/ops/onednn_conv.py``: primitives made once, linked against
the pip-installed oneDNN), side by side in one run with torch's oneDNN call (``mkldnn``
``_convolution_pointwise`` with prepacked weights), which ``optimize()`` used before.

HRNet-W32 pose forward, 256x192, ``optimize()`` (channels_last, backend cpp, op plans), batch 1 and 8,
float32 and bfloat16: two engines of one model, one with the direct path off while it runs its
Python forward and records its plan. Calls alternate (torch, direct, torch, direct, ...); medians (and
minima) over the rounds, and the largest difference between the two outputs. Writes cpu_onednn.json
and cpu_onednn.md to --out when given.

    python benchmarks/cpu_onednn.py [--threads N] [--reps 15] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

import torch
from cpu_ext import alternate, cpp_run_setup, runner_columns, summary_row

from hrnet_fast import HRNet, optimize
from hrnet_fast.bench.report import table
from hrnet_fast.bench.results import add_report_arguments, write_report
from hrnet_fast.nn import folded
from hrnet_fast.ops.onednn_conv import onednn_conv_status
from hrnet_fast.testing import randomize_batchnorm_

CASES = ((1, torch.float32), (1, torch.bfloat16), (8, torch.float32), (8, torch.bfloat16))


@contextlib.contextmanager
def direct_off() -> Iterator[None]:
    """FoldedConv takes torch's oneDNN call even where the direct path applies."""
    applies = folded.onednn_conv_applies
    folded.onednn_conv_applies = lambda *args: False
    try:
        yield
    finally:
        folded.onednn_conv_applies = applies


def bench(reps: int) -> list[dict]:
    torch.manual_seed(0)
    model = randomize_batchnorm_(HRNet("w32", head="pose")).eval()
    rows = []
    for batch, dtype in CASES:
        engines = {name: optimize(model, dtype=dtype, backend="cpp") for name in ("torch", "direct")}
        x = torch.randn(batch, 3, 256, 192).to(dtype).contiguous(memory_format=torch.channels_last)

        def torch_call(e=engines["torch"], x=x):
            with direct_off():
                return e(x)

        fns = {"torch": torch_call, "direct": lambda e=engines["direct"], x=x: e(x)}
        with torch.inference_mode():
            samples = alternate(fns, reps, warmup=3)  # the plans: first call as Python, second records
            outputs = {name: fn() for name, fn in fns.items()}
        base = {"batch": batch, "dtype": str(dtype).removeprefix("torch.")}
        rows.append(row := summary_row(samples, outputs, outputs["torch"], base))
        print(f"  b{batch} {row['dtype']}: torch's call {row['torch_ms']:.2f} ms, direct {row['direct_ms']:.2f} ms")
    return rows


COLUMNS = runner_columns(("torch", "torch's call"), ("direct", "direct"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--reps", type=int, default=15, help="alternating rounds per case")
    add_report_arguments(parser, "cpu_onednn")
    args = parser.parse_args(argv)
    env, setup, load_before = cpp_run_setup(
        "cpu_onednn.py", argv, args.threads, f"medians of {args.reps} alternating rounds"
    )
    reason = onednn_conv_status()
    if reason is not None:
        raise SystemExit(f"direct oneDNN convolutions unavailable: {reason}")
    print(setup)
    text = table(rows := bench(args.reps), COLUMNS)
    print(f"\nHRNet-W32 pose forward, optimize() channels_last, torch's oneDNN call and the direct one\n{text}")
    env["load"] = (load_before, os.getloadavg()[0])
    if args.out:
        results = {"setup": setup, "environment": env, "model": rows}
        write_report(
            args.out,
            args.name,
            results,
            "Direct oneDNN convolutions (benchmarks/cpu_onednn.py)",
            env,
            f"\n{setup}.\n\nHRNet-W32 pose forward, 256x192, optimize() (backend cpp, channels_last, op plans), "
            "its convolutions through torch's oneDNN call (mkldnn._convolution_pointwise, prepacked weights) and "
            f"through oneDNN's primitive API directly (hrnet_fast/ops/onednn_conv.py):\n\n```\n{text}\n```\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
