"""argparse types shared by the ``hrnet-fast`` subcommands.

Building a parser with these imports no torch: argparse calls a ``type`` only on a value being
parsed (never for ``--help``), and the checks that need the package's tables (arch names, backend
names, devices) import them then. A bad value exits with argparse's one-line usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

BAD_INPUT = 2  # the exit status of a command given input it cannot use


def size(text: str) -> tuple[int, int]:
    """``"256x192"`` -> (256, 192): height x width, both positive."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 256x192, got {text!r}")
    return int(parts[0]), int(parts[1])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def arch(text: str) -> str:
    """An arch name of the official table (``w32``, ``w18_small_v2``, ...)."""
    from .models.configs import ARCHS

    if text not in ARCHS:
        raise argparse.ArgumentTypeError(f"unknown arch {text!r}; choose one of {', '.join(ARCHS)}")
    return text


def head(text: str) -> str:
    """A head of :class:`hrnet_fast.HRNet` (``pose``, ``seg``, ...)."""
    from .models import HEADS

    if text not in HEADS:
        raise argparse.ArgumentTypeError(f"unknown head {text!r}; choose one of {', '.join(HEADS)}")
    return text


def backend(text: str) -> str:
    """A backend name of :func:`hrnet_fast.ops.known_backends`."""
    from .ops import known_backends

    if text not in known_backends():
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; choose one of {', '.join(known_backends())}")
    return text


def backend_or_auto(text: str) -> str:
    """``auto`` (the fastest available for the tensors' device) or a backend name."""
    return text if text == "auto" else backend(text)


def device(text: str):
    """``auto`` (CUDA when there is a GPU, else the CPU) or a torch device that exists here."""
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        found = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available here")
    return found


def reporting_errors(
    command: Callable[[argparse.Namespace], int], *input_errors: type[Exception]
) -> Callable[[argparse.Namespace], int]:
    """``command`` that prints input errors as one line and returns :data:`BAD_INPUT` instead of a
    traceback: ``input_errors`` (the app's own), missing files, checkpoint errors, unavailable backends."""

    def run(args: argparse.Namespace) -> int:
        from .models import CheckpointError
        from .ops import BackendUnavailableError

        try:
            return command(args)
        except (*input_errors, FileNotFoundError, CheckpointError, BackendUnavailableError) as exc:
            print(f"hrnet-fast {args.command}: error: {exc}", file=sys.stderr)
            return BAD_INPUT

    return run
