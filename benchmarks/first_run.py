"""Time the README's two commands as a new user meets them, and write the report RESULTS.md includes.

    python benchmarks/first_run.py [--only main|test] [--out benchmarks/results/first-run.md]

Clones this checkout's HEAD into a temporary folder, runs "The two commands" of its README.md as
written (the main command, then the test command between the ``test-command`` markers, which is
what ``.ci/run`` runs) with an empty extension cache (``HRNET_FAST_CACHE_DIR``: the C++ extension
compiles, as on a first run), and times each with its parts, read from the output's timestamps:
install, extension build and bench for the main command; install, lint and pytest for the tests.
The machine's 1-minute load average is sampled every 15 s, since other jobs on a shared machine
slow every part down. Needs a clean working tree (what is measured is the commit named). Each run
adds its rows to the report's table; earlier rows stay (how the times vary with the load).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hrnet_fast.bench.results import cpu_model

ROOT = Path(__file__).resolve().parent.parent
# (part, the output line that ends it) per command, in order; the last part ends with the command
INSTALLED = r"^Successfully installed .*hrnet-fast"
PARTS = {
    "main": [("install", INSTALLED), ("extension build and imports", r", torch \d"), ("bench", None)],
    "test": [("install", INSTALLED), ("lint", r"files? already formatted$"), ("pytest", None)],
}


def readme_commands(readme: str) -> dict[str, str]:
    """The main command (first bash block under "## The two commands") and the test command."""
    section = readme.split("## The two commands", 1)[1]
    main = re.search(r"^```bash\n(.*?)\n```", section, re.M | re.S).group(1)
    marked = readme.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->", 1)[0]
    test = re.search(r"^```bash\n(.*?)\n```", marked, re.M | re.S).group(1)
    return {"main": main.strip(), "test": test.strip()}


class LoadSampler(threading.Thread):
    """The 1-minute load average every ``every_s`` seconds until stopped."""

    def __init__(self, every_s: float = 15.0):
        super().__init__(daemon=True)
        self.every_s, self.samples, self.stopped = every_s, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append(os.getloadavg()[0])
            self.stopped.wait(self.every_s)

    def summary(self) -> str:
        return f"{statistics.mean(self.samples):.1f} (max {max(self.samples):.1f})"


def run_timed(command: str, cwd: Path, env: dict, log: Path) -> tuple[int, float, list[tuple[float, str]]]:
    """Run ``command`` with bash; its exit status, seconds, and each output line with its time."""
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    with (
        subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
        log.open("w") as out,
    ):
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            out.write(f"{lines[-1][0]:7.1f} {line}")
            out.flush()
    return proc.returncode, time.perf_counter() - start, lines


def parts(kind: str, total_s: float, lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Seconds of each part of PARTS[kind]: from the line that ends the one before to the line that ends it."""
    bounds = [0.0]
    for _, pattern in PARTS[kind][:-1]:
        end = next((t for t, line in lines if t >= bounds[-1] and re.search(pattern, line)), None)
        if end is None:
            return []
        bounds.append(end)
    bounds.append(total_s)
    return [(name, bounds[k + 1] - bounds[k]) for k, (name, _) in enumerate(PARTS[kind])]


def outcome(lines: list[tuple[float, str]]) -> str:
    """pytest's summary ("650 passed, 284 skipped ...") or, for the bench, how many tables it printed."""
    summary = [line.strip("= ") for _, line in lines if re.search(r"\d+ passed", line)]
    if summary:
        return re.sub(r" in [\d.]+s.*", "", summary[-1])
    tables = sum(bool(re.match(r"(op|model|train): ", line)) for _, line in lines)
    return f"{tables} tables"


HEADER = """## First run: the README's two commands on a fresh clone

Each row is one command of one run of `python benchmarks/first_run.py`: a fresh clone of the commit
named, the command exactly as README.md writes it (main: set up and `hrnet-fast bench`; test: set up,
lint, `pytest -q`), an empty extension cache. Load: the machine's 1-minute load average during the
command, sampled every 15 s (other jobs share the machine; the times grow with it).

| date | machine | commit | command | time | parts | outcome | load |
|---|---|---|---|---|---|---|---|
"""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["main", "test"], help="time one command (default: both)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "first-run.md")
    args = parser.parse_args()
    if subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip():
        sys.exit("first_run: commit your changes first: the clone measures HEAD")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    kinds = [args.only] if args.only else ["main", "test"]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="hrnet-fast-first-run-") as tmp:
        for kind in kinds:
            clone = Path(tmp) / f"clone-{kind}"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            subprocess.run(["git", "checkout", "-q", commit.stdout.strip()], cwd=clone, check=True)
            command = readme_commands((clone / "README.md").read_text())[kind]
            env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "TRITON_INTERPRET")}
            venv = os.environ.get("VIRTUAL_ENV")  # run as a new user would: outside this shell's venv
            env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not venv or venv not in p)
            env |= {"HRNET_FAST_CACHE_DIR": str(Path(tmp) / f"cache-{kind}"), "PYTHONUNBUFFERED": "1"}
            env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
            print(f"first_run: {kind}: {command}", file=sys.stderr)
            load = LoadSampler()
            load.start()
            status, seconds, lines = run_timed(command, clone, env, Path(tmp) / f"{kind}.log")
            load.stopped.set()
            if status != 0:
                print("\n".join(line for _, line in lines[-40:]), file=sys.stderr)
                sys.exit(f"first_run: the {kind} command failed (exit status {status})")
            split = ", ".join(f"{name} {_minutes(s)}" for name, s in parts(kind, seconds, lines))
            rows.append(
                f"| {date} | {machine} | {commit.stdout.strip()} | {kind} | {_minutes(seconds)} | {split} | "
                f"{outcome(lines)} | {load.summary()} |"
            )
            print(f"first_run: {kind}: {_minutes(seconds)} ({split}), load {load.summary()}", file=sys.stderr)
    earlier = args.out.read_text().split("|---|---|---|---|---|---|---|---|\n", 1)[1] if args.out.exists() else ""
    args.out.write_text(HEADER + earlier + "\n".join(rows) + "\n")
    print(f"first_run: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
