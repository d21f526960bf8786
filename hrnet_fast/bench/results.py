"""Benchmark results on disk (JSON) and the regression check between two runs."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .suites import Result

NOISE_FLOOR = 0.10  # slowdowns under 10% are never flagged: run-to-run noise on shared machines


def environment(device: torch.device, command: str) -> dict:
    """Where and with what a run was measured, and the exact ``command`` that measured it."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    onednn, onednn_off = _onednn() if device.type == "cpu" else (None, None)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "onednn": onednn,
        "onednn_off": onednn_off,
        "command": command,
    }


def _onednn() -> tuple[str | None, str | None]:
    """The pip-installed oneDNN's version (None: not installed) and, when it is installed, why
    ``optimize()`` does not call it directly on this CPU (None: it does; checking may build the
    library on first use)."""
    try:
        version = importlib.metadata.version("onednn-cpu-gomp")
    except importlib.metadata.PackageNotFoundError:
        return None, None
    from ..ops.onednn_conv import onednn_conv_status

    return version, onednn_conv_status()


def cpu_model() -> str:
    """The CPU's model name, family and model numbers and the vector ISA torch uses on it, e.g. "AMD EPYC,
    family 25 model 17, AVX2": one model name covers CPUs of several generations, and a VM may hide
    AVX-512 from a CPU that has it."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block ends
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    from ..ops import cpu_features

    name = fields.get("model name") or platform.processor() or "unknown CPU"
    details = [f"family {fields['cpu family']} model {fields['model']}"] if "cpu family" in fields else []
    return ", ".join([name, *details, cpu_features.vector_isa()])


def onednn_text(env: dict) -> str:
    """ ", oneDNN <version> (pip, called directly)" (or why it was not), "" where it was not installed."""
    if not env.get("onednn"):
        return ""
    off = env.get("onednn_off")
    return f", oneDNN {env['onednn']} " + (f"(pip, not called directly: {off})" if off else "(pip, called directly)")


def markdown_header(title: str, env: dict) -> str:
    """The heading of a results section: what, where, when, with which versions, by which command."""
    return (
        f"## {title}: {env['device_name']} ({env['device']}), {env['date']}\n\n"
        f"torch {env['torch']}, triton {env['triton']}, Python {env['python']}, {env['cpu_count']} CPUs"
        + onednn_text(env)
        + (f"; load average {env['load'][0]:.1f} before, {env['load'][1]:.1f} after" if env.get("load") else "")
        + ".\n\n"
        f"Command: `{env['command']}`\n"
    )


def add_report_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out FOLDER`` and ``--name NAME`` (default ``name``) of a script that ends in
    :func:`write_report`: ``--out benchmarks/results --name <name>-<cpu>`` writes a run beside the
    others under the command it records."""
    parser.add_argument("--out", type=Path, default=None, help="folder for NAME.json and NAME.md")
    parser.add_argument("--name", default=name, help=f"file name of the report (default: {name})")


def write_report(folder: str | os.PathLike, name: str, data: dict, title: str, env: dict, body: str) -> None:
    """A benchmark script's results in ``folder`` (made if missing): ``<name>.json`` holding ``data``
    and ``<name>.md``, the section ``update_results.py`` includes: the heading of ``title`` and
    ``env`` (:func:`markdown_header`), then ``body``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data, indent=2))
    (folder / f"{name}.md").write_text(markdown_header(title, env) + body)


def save_json(path: str | os.PathLike, results: Sequence[Result], meta: dict) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": [dataclasses.asdict(r) for r in results]}, f, indent=1)


def load_json(path: str | os.PathLike) -> tuple[dict, list[Result]]:
    try:
        with open(path) as f:
            data = json.load(f)
        return data["meta"], [Result(**r) for r in data["results"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a results file written by `hrnet-fast bench --json`: {exc}") from exc


@dataclass(frozen=True)
class Regression:
    key: tuple[str, str, str]
    old_ms: float
    new_ms: float
    allowed: float  # the relative slowdown this pair's noise allows

    @property
    def ratio(self) -> float:
        return self.new_ms / self.old_ms

    def __str__(self) -> str:
        suite, case, backend = self.key
        return (
            f"{suite} {case} [{backend}]: {self.old_ms:.3f} -> {self.new_ms:.3f} ms "
            f"({self.ratio:.2f}x, noise allows {1 + self.allowed:.2f}x)"
        )


def compare(old: Sequence[Result], new: Sequence[Result]) -> tuple[list[Regression], int]:
    """Slowdowns beyond noise between runs, and how many results both runs have.

    A result regresses when new/old time exceeds 1 + max(NOISE_FLOOR, 3 x the two runs' mean
    interquartile spread): a planted 2x slowdown is caught, a few percent of wobble is not.
    """
    before = {r.key: r for r in old}
    regressions, matched = [], 0
    for r in new:
        if r.key not in before or r.ms is None or before[r.key].ms is None:
            continue
        matched += 1
        o = before[r.key]
        allowed = max(NOISE_FLOOR, 3 * (o.spread + r.spread) / 2)
        if r.ms > o.ms * (1 + allowed):
            regressions.append(Regression(r.key, o.ms, r.ms, allowed))
    return regressions, matched
