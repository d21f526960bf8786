"""The prepared GPU scripts run their logic on the CPU (``--device cpu``), so a GPU session does not
find their bugs first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_gpu_level2_checks_and_times_the_cpp_level2_step_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_level2

    assert gpu_level2.main([str(tmp_path), "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "gpu_level2.json").read_text())
    steps = {r["check"].split()[0] for r in results["checks"]}
    assert steps == set(gpu_level2.STEPS) and all(r["ok"] for r in results["checks"])
    per_step = len(gpu_level2.CHECKED["cpu"]) * len(gpu_level2.LAYOUTS) * 4  # 4 output branches
    assert len(results["checks"]) == len(gpu_level2.STEPS) * per_step
    (row,) = results["timings"]
    assert row["cpp_ms"] > 0 and row["eager_ms"] > 0
    assert "cpp ms" in (tmp_path / "gpu_level2.md").read_text()


def test_gpu_cuda_checks_the_cpp_level1_kernels_on_the_cpu(tmp_path, monkeypatch):
    """Its correctness checks (every op, dtype, layout and mode at its GPU shapes) on the CPU kernels;
    a rule too strict for what the reference itself gets right fails here before a GPU session."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_cuda

    monkeypatch.setattr(gpu_cuda, "DEVICE", gpu_cuda.DEVICE)  # main() sets it; restored afterwards
    assert gpu_cuda.main([str(tmp_path), "--device", "cpu"]) == 0


def test_gpu_triton_smoke_run_checks_and_times_every_path_on_the_cpu(tmp_path):
    """``--smoke``: the target case at an eighth of its size, under Triton's interpreter."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, str(BENCHMARKS / "gpu_triton.py"), str(tmp_path), "--smoke"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "all results correct: yes" in result.stdout
