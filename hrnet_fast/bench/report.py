"""Readable tables and a bar chart of benchmark results."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

from .suites import Result


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Render ``rows`` with ``columns`` = (key, header, format spec), right-aligned; None prints '-'."""
    cells = [[h for _, h, _ in columns]]
    cells += [["-" if r[k] is None else format(r[k], f) for k, _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


OP_COLUMNS = [
    ("backend", "backend", "s"),
    ("ms", "ms", ".3f"),
    ("gb_per_s", "GB/s", ".1f"),
    ("pct_of_copy", "% of copy", ".0f"),
    ("speedup", "vs reference", ".2f"),
    ("max_abs_err", "max |err|", ".1e"),
]
MODEL_COLUMNS = [
    ("backend", "backend", "s"),
    ("ms", "ms/batch", ".2f"),
    ("spread", "spread", ".0%"),
    ("img_per_s", "img/s", ".1f"),
    ("speedup", "vs reference", ".2f"),
    ("vs_best_peer", "vs best peer", ".2f"),
    ("max_abs_err", "max |err|", ".1e"),
    ("setup_s", "build s", ".1f"),
    ("note", "", "s"),
]


TRAIN_COLUMNS = [
    ("backend", "backend", "s"),
    ("ms", "ms/step", ".2f"),
    ("img_per_s", "img/s", ".1f"),
    ("speedup", "vs reference", ".2f"),
    ("mem_mb", "act. MB", ".0f"),
    ("max_abs_err", "|loss diff|", ".1e"),
]
SEG_COLUMNS = [
    ("backend", "runner", "s"),
    ("ms", "ms/image", ".0f"),
    ("img_per_s", "img/s", ".3f"),
    ("speedup", "vs eager-fp32", ".2f"),
    ("mem_mb", "peak MB", ".0f"),
    ("max_abs_err", "labels changed", ".2%"),
]
COLUMNS = {"op": OP_COLUMNS, "model": MODEL_COLUMNS, "train": TRAIN_COLUMNS, "seg": SEG_COLUMNS}


def render(results: Sequence[Result]) -> str:
    """One titled table per benchmark case, in the order measured."""
    blocks, cases = [], list(dict.fromkeys((r.suite, r.case) for r in results))
    for suite, case in cases:
        rows = [r.__dict__ for r in results if (r.suite, r.case) == (suite, case)]
        blocks.append(f"{suite}: {case}\n{table(rows, COLUMNS[suite])}")
    return "\n\n".join(blocks)


def plot(results: Sequence[Result], path: str | os.PathLike) -> None:
    """A PNG bar chart of every case's speedup over the reference, one bar per backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'hrnet-fast[plot]'") from exc
    cases = list(dict.fromkeys(r.case for r in results))
    backends = list(dict.fromkeys(r.backend for r in results))
    width = 0.8 / len(backends)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4))
    for k, backend in enumerate(backends):
        xs, ys = [], []
        for i, case in enumerate(cases):
            match = [r for r in results if r.case == case and r.backend == backend and r.speedup is not None]
            if match:
                xs.append(i + (k - (len(backends) - 1) / 2) * width)
                ys.append(match[0].speedup)
        ax.bar(xs, ys, width, label=backend)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cases)), [textwrap.fill(c, 18) for c in cases], fontsize=7)
    ax.set_ylabel("speedup vs reference (same run)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
