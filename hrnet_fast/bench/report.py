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


TIME_COLUMNS = [("spread", "spread", ".0%"), ("samples", "n", "d")]
SPEEDUP_COLUMNS = [("speedup", "vs reference", ".2f"), ("interval", "95% interval", "s")]
NOTE_COLUMN = ("note", "", "s")  # why a row has no timing, or that its speedup is within noise
OP_COLUMNS = [
    ("backend", "backend", "s"),
    ("ms", "ms", ".3f"),
    *TIME_COLUMNS,
    ("gb_per_s", "GB/s", ".1f"),
    ("pct_of_copy", "% of copy", ".0f"),
    *SPEEDUP_COLUMNS,
    ("max_abs_err", "max |err|", ".1e"),
    NOTE_COLUMN,
]
MODEL_COLUMNS = [
    ("backend", "backend", "s"),
    ("ms", "ms/batch", ".2f"),
    *TIME_COLUMNS,
    ("img_per_s", "img/s", ".1f"),
    *SPEEDUP_COLUMNS,
    ("vs_best_peer", "vs best peer", ".2f"),
    ("max_abs_err", "max |err|", ".1e"),
    ("setup_s", "build s", ".1f"),
    NOTE_COLUMN,
]
TRAIN_COLUMNS = [
    ("backend", "backend", "s"),
    ("ms", "ms/step", ".2f"),
    *TIME_COLUMNS,
    ("img_per_s", "img/s", ".1f"),
    *SPEEDUP_COLUMNS,
    ("mem_mb", "act. MB", ".0f"),
    ("max_abs_err", "|loss diff|", ".1e"),
    NOTE_COLUMN,
]
SEG_COLUMNS = [
    ("backend", "runner", "s"),
    ("ms", "ms/image", ".0f"),
    *TIME_COLUMNS,
    ("img_per_s", "img/s", ".3f"),
    ("speedup", "vs eager-fp32", ".2f"),
    ("interval", "95% interval", "s"),
    ("mem_mb", "peak MB", ".0f"),
    ("max_abs_err", "labels changed", ".2%"),
    NOTE_COLUMN,
]
COLUMNS = {"op": OP_COLUMNS, "model": MODEL_COLUMNS, "train": TRAIN_COLUMNS, "seg": SEG_COLUMNS}
NOISE_NOTE = "within noise"
LEGEND = (
    "Times are medians of n timed calls; spread: their interquartile range / median; 95% interval: the\n"
    "speedup's, from both medians' confidence intervals; 'within noise': that interval holds 1.0, so the\n"
    "difference from the reference is not shown to be real."
)


def _row(result: Result) -> dict:
    known = result.speedup_low is not None and result.backend != "reference"
    interval = f"{result.speedup_low:.2f}-{result.speedup_high:.2f}" if known else ""
    note = result.note or (NOISE_NOTE if result.within_noise else "")
    return result.__dict__ | {"interval": interval, "note": note}


def render_case(results: Sequence[Result]) -> str:
    """The titled table of one benchmark case (all ``results`` share suite and case)."""
    suite, case = results[0].suite, results[0].case
    return f"{suite}: {case}\n{table([_row(r) for r in results], COLUMNS[suite])}"


def render(results: Sequence[Result]) -> str:
    """One titled table per benchmark case, in the order measured, and the legend."""
    cases = dict.fromkeys((r.suite, r.case) for r in results)
    blocks = [render_case([r for r in results if (r.suite, r.case) == key]) for key in cases]
    return "\n\n".join([*blocks, LEGEND])


def speedup_figure(results: Sequence[Result], title: str):
    """A matplotlib figure: every case's speedup over the reference, one bar per backend, labelled
    with its value, with whiskers spanning the speedup's ~95% interval, under ``title``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r.case for r in results))
    backends = list(dict.fromkeys(r.backend for r in results))
    width = 0.8 / len(backends)
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(cases)), 4.5))
    for k, backend in enumerate(backends):
        found = [
            (i, r)
            for i, case in enumerate(cases)
            for r in results
            if (r.case, r.backend) == (case, backend) and r.speedup is not None
        ]
        xs = [i + (k - (len(backends) - 1) / 2) * width for i, _ in found]
        ys = [r.speedup for _, r in found]
        whiskers = [
            [r.speedup - (r.speedup_low or r.speedup) for _, r in found],
            [(r.speedup_high or r.speedup) - r.speedup for _, r in found],
        ]
        bars = ax.bar(xs, ys, width, yerr=whiskers, capsize=2, label=backend)
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=6, padding=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cases)), [textwrap.fill(c, 18) for c in cases], fontsize=7)
    ax.set_ylabel("speedup vs reference (same run)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot(results: Sequence[Result], path: str | os.PathLike, title: str) -> None:
    """Write :func:`speedup_figure` as a PNG (needs matplotlib, the ``plot`` extra)."""
    import matplotlib.pyplot as plt

    fig = speedup_figure(results, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
