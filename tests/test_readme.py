"""Every python snippet of README.md runs as written.

The rule, kept simple so that any section's snippets are picked up:

- every fenced block that opens with a line "```python" at the start of a line is a snippet;
- a snippet whose fence is directly preceded by the line "<!-- gpu -->" runs only where CUDA is
  available (it is skipped elsewhere);
- each snippet runs on its own (a fresh namespace), in a temporary working folder that holds a
  synthetic checkpoint (random weights of the right arch and head, saved as a state_dict) under
  every official file name in :data:`CHECKPOINTS` the snippet mentions. A snippet naming another
  ``.pth`` file fails until that name is added to :data:`CHECKPOINTS`;
- a line ``name = ...  # (8, 17, 64, 48)`` (a comment opening with a tuple of whole numbers)
  claims the shape of ``name``, and the test checks the claim.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import torch

from hrnet_fast import HRNet

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPET = re.compile(r"^(?P<marker><!-- gpu -->\n)?```python\n(?P<code>.*?)^```", re.M | re.S)
SHAPE_CLAIM = re.compile(r"^(\w+) = .*#\s*\((\d+(?:,\s*\d+)*)\)", re.M)
# official checkpoint file name -> (arch, HRNet keyword arguments)
CHECKPOINTS = {
    "pose_hrnet_w32_256x192.pth": ("w32", {"head": "pose"}),
    "pose_hrnet_w48_256x192.pth": ("w48", {"head": "pose"}),
}


def snippets(text: str) -> list[tuple[int, bool, str]]:
    """(line number, needs a GPU, code) of each python snippet in ``text``."""
    return [
        (text.count("\n", 0, m.start("code")) + 1, bool(m.group("marker")), m.group("code"))
        for m in SNIPPET.finditer(text)
    ]


FOUND = snippets(README.read_text())


def test_the_rule_finds_the_snippets_and_their_gpu_marks():
    text = "x\n```python\na = 1\n```\n<!-- gpu -->\n```python\nb = 2\n```\n```bash\nc\n```\n"
    assert snippets(text) == [(3, False, "a = 1\n"), (7, True, "b = 2\n")]
    assert len(FOUND) >= 2 and any(gpu for _, gpu, _ in FOUND) and not all(gpu for _, gpu, _ in FOUND)
    claims = SHAPE_CLAIM.findall("y = f(x)  # (8, 17, 64, 48), float16\nz = g()  # float32 images, (N, 3)\n")
    assert claims == [("y", "8, 17, 64, 48")]


@pytest.mark.parametrize(
    ("gpu", "code"),
    [pytest.param(gpu, code, marks=[pytest.mark.cuda] if gpu else [], id=f"line{line}") for line, gpu, code in FOUND],
)
def test_readme_snippet_runs(gpu, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in re.findall(r"[\w.-]+\.pth\b", code):
        assert name in CHECKPOINTS, f"README snippet loads {name}: add it to CHECKPOINTS in {__file__}"
        arch, kwargs = CHECKPOINTS[name]
        torch.manual_seed(0)
        torch.save(HRNet(arch, **kwargs).state_dict(), tmp_path / name)
    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(code, f"README.md snippet ({'gpu' if gpu else 'cpu'})", "exec"), namespace)
    for name, dims in SHAPE_CLAIM.findall(code):
        claimed = tuple(int(d) for d in dims.split(","))
        assert tuple(namespace[name].shape) == claimed, f"README claims {name} has shape {claimed}"
    outputs = [v for v in namespace.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert all(torch.isfinite(t).all() for t in outputs), "a README snippet computed NaN or inf"


def _first_run():
    spec = importlib.util.spec_from_file_location("first_run", README.parent / "benchmarks" / "first_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_first_run_report_times_the_commands_ci_runs():
    first_run = _first_run()
    commands = first_run.readme_commands(README.read_text())
    ci = subprocess.run(
        [
            "bash",
            "-c",
            "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md"
            " | sed -n '/^```bash$/,/^```$/p' | sed '1d;$d'",
        ],
        cwd=README.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert commands["test"] == ci.stdout.strip()  # what .ci/run extracts
    assert commands["main"].endswith("hrnet-fast bench") and "pip install torch==2.13.0" in commands["main"]
    lines = [
        (1.0, "Collecting numpy"),
        (40.0, "Successfully installed hrnet-fast-0.1.0 numpy-2"),
        (45.0, "hrnet_fast: compiling ..."),
        (95.0, "AMD EPYC (cpu), torch 2.13.0+cpu, triton 3.9"),
    ]
    assert first_run.parts("main", 150.0, lines) == [
        ("install", 40.0),
        ("extension build and imports", 55.0),
        ("bench", 55.0),
    ]
    assert first_run.parts("test", 150.0, lines) == []  # no lint line: no parts rather than wrong ones
    assert first_run.outcome([*lines, (99.0, "op: upsample_sum w32"), (120.0, "model: pose w32")]) == "2 tables"
    pytest_end = [(0.0, "..."), (9.0, "=== 650 passed, 284 skipped, 11 warnings in 261.20s (0:04:21) ===")]
    assert first_run.outcome(pytest_end) == "650 passed, 284 skipped, 11 warnings"
