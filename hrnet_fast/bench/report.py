"""Readable tables of benchmark results."""

from __future__ import annotations

from collections.abc import Sequence


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Render ``rows`` with ``columns`` = (key, header, format spec), right-aligned, one line each."""
    cells = [[h for _, h, _ in columns]] + [[format(r[k], f) for k, _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
