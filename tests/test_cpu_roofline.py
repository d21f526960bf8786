"""benchmarks/cpu_roofline.py and cpu_peak.c: the peak they measure, the model's multiply-adds they
count and the share of the peak they give each engine of a peer run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hrnet_fast.bench import results
from hrnet_fast.bench.suites import Result

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _cpu_flags() -> set[str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return set(next((ln for ln in lines if ln.startswith("flags")), "").split())


@pytest.fixture
def roofline(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import cpu_roofline

    return cpu_roofline


@pytest.mark.skipif(
    not {"avx512f", "avx2"} & _cpu_flags() or shutil.which("cc") is None, reason="cpu_peak.c needs cc and AVX2"
)
def test_the_peak_kernel_builds_and_measures_both_dtypes(roofline):
    peak = roofline.measure_peak(threads=1, reps=1)
    assert peak["fp32"] > 1.0  # GMAC/s: any AVX2 core does several
    if "avx512_bf16" in _cpu_flags():
        assert peak["bf16"] > 1.5 * peak["fp32"]  # a vdpbf16ps does twice a vfmadd231ps's multiply-adds
    else:
        assert peak["bf16"] is None


def test_the_model_is_counted_with_its_convolutions_multiply_adds(roofline):
    assert roofline.conv_macs_per_image() == 7_261_224_960  # HRNet-W32 pose at 256x192 ("7.1 GFLOPs")


def test_each_engine_of_a_peer_run_gets_its_share_of_its_dtypes_peak(roofline, tmp_path):
    case = "pose w32 256x192 b8 bfloat16 channels_last"
    rows = [
        Result("model", case, "optimize", 100.0, 0.01, 2.0, 0.0),
        Result("model", case, "onnxruntime", None, None, None, None, note="no bfloat16 convolutions"),
        Result("model", "pose w48 256x192 b8 bfloat16 channels_last", "optimize", 50.0, 0.01, 2.0, 0.0),
    ]
    results.save_json(tmp_path / "cpu-w32-pose-b8-bf16-peers.json", rows, {"date": "today", "device_name": "A"})
    elsewhere = [Result("model", case, "optimize", 10.0, 0.01, 2.0, 0.0)]  # another CPU's run: left out
    results.save_json(tmp_path / "cpu-other-w32-pose-b8-bf16-peers.json", elsewhere, {"device_name": "B"})
    (row,) = roofline.engine_rows(tmp_path, macs=1_000_000_000, peak={"fp32": 100.0, "bf16": 160.0}, device_name="A")
    assert row["engine"] == "optimize" and row["batch"] == 8 and row["dtype"] == "bf16"
    assert row["gmac_per_s"] == pytest.approx(80.0)  # 8 images x 1 GMAC in 0.1 s
    assert row["pct_of_peak"] == pytest.approx(50.0)
