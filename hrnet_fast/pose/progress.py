"""A one-line progress bar: done/total, rate and time left, redrawn at most five times a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_REDRAW_S = 0.2


class ProgressBar:
    """``bar.update(n)`` after each piece of work; ``bar.close()`` draws the final state and ends the line."""

    def __init__(self, total: int, unit: str = "it", stream: TextIO | None = None, enabled: bool = True):
        self.total, self.unit, self.done = total, unit, 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.start = self.drawn = time.perf_counter()
        self.drawn_done = -1

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.enabled and time.perf_counter() - self.drawn >= _REDRAW_S:
            self._draw()

    def _draw(self) -> None:
        self.drawn, self.drawn_done = time.perf_counter(), self.done
        elapsed = max(self.drawn - self.start, 1e-9)
        rate = self.done / elapsed
        filled = round(_WIDTH * self.done / self.total) if self.total else _WIDTH
        left = f", {(self.total - self.done) / rate:.0f}s left" if 0 < self.done < self.total else ""
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (_WIDTH - filled)}] {self.done}/{self.total} {self.unit} "
            f"({rate:.1f} {self.unit}/s{left})  "
        )
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.drawn_done != self.done:
            self._draw()
        self.stream.write("\n")
