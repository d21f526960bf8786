"""Progress bars for the commands: tqdm on stderr, drawn only when stderr is a terminal (a log gets
no bar and no escape codes).

tqdm is a dependency; where it is missing all the same (a ``pip install --no-deps`` on an offline
image, as the prepared GPU check does) the commands run without a bar instead of failing.
"""

from __future__ import annotations

import sys


class SilentBar:
    """The calls the commands make on a bar, drawing nothing; ``write`` still prints its line."""

    def __enter__(self) -> SilentBar:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass

    def set_description_str(self, text: str, refresh: bool = True) -> None:
        pass

    def write(self, text: str, file=None) -> None:
        print(text, file=file or sys.stdout)


def progress_bar(total: int, unit: str, enabled: bool = True):
    """A context manager and bar with ``update``, ``set_description_str`` and ``write`` (which prints
    a line above the bar): tqdm's, hidden where stderr is not a terminal or ``enabled`` is false."""
    try:
        from tqdm import tqdm
    except ImportError:
        return SilentBar()
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None if enabled else True)
