"""The segmentation end-to-end rows of ``hrnet-fast bench --suite seg``, at a small size."""

from __future__ import annotations

import torch

from hrnet_fast.bench import report
from hrnet_fast.bench.seg import BASELINE, bench_seg_end_to_end
from hrnet_fast.bench.suites import OPTIMIZE, Settings
from hrnet_fast.bench.timer import StopRule


def test_seg_rows_time_each_runner_with_its_peak_memory():
    settings = Settings(torch.device("cpu"), torch.float32, channels_last=False, warmup=0, rule=StopRule.fixed(2))
    found = bench_seg_end_to_end(settings, backends=["reference", "cpp"], arch="w18_small_v1", size=(64, 128))
    assert [r.backend for r in found] == [BASELINE, "cpp", OPTIMIZE]  # reference fp32 NCHW is the baseline
    assert found[0].speedup == 1.0 and found[0].max_abs_err == 0.0
    for r in found:
        assert r.suite == "seg" and r.case == "seg w18_small_v1 64x128 end to end, float32 NCHW"
        assert r.img_per_s == 1e3 / r.ms and r.samples == 2 and r.mem_mb > 100  # the process peak: torch loaded
        assert r.max_abs_err < 0.01  # float32 everywhere: labels change only at near ties
    table = report.render(found)
    assert "labels changed" in table and "peak MB" in table and OPTIMIZE in table


def test_seg_rows_use_the_same_model_in_every_run_and_leave_the_callers_random_stream_alone():
    settings = Settings(torch.device("cpu"), torch.bfloat16, channels_last=True, warmup=0, rule=StopRule.fixed(1))
    torch.manual_seed(123)
    expected = torch.rand(3)
    changed = []
    for _ in range(2):
        torch.manual_seed(123)
        found = bench_seg_end_to_end(settings, backends=["reference"], arch="w18_small_v1", size=(64, 128))
        assert torch.equal(torch.rand(3), expected)
        changed.append([r.max_abs_err for r in found])
    assert changed[0] == changed[1]  # seeded weights: the same labels, so the same changes, in each run
