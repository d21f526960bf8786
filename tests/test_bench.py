"""The benchmark harness: clocks that wait for the device, JSON round trips, regression checks, CLI."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest
import torch

from hrnet_fast import HRNet
from hrnet_fast.bench import results, suites
from hrnet_fast.bench.shapes import branch_sizes, fusion_shapes
from hrnet_fast.bench.timer import L2_BYTES, Rotation, synchronized_clock, time_fn
from hrnet_fast.cli import main


class AsyncDevice:
    """Work that finishes after the call returns, like a kernel launch, until ``sync`` waits for it."""

    def __init__(self, seconds: float):
        self.seconds, self.pending = seconds, []

    def launch(self):
        worker = threading.Thread(target=time.sleep, args=(self.seconds,))
        worker.start()
        self.pending.append(worker)

    def sync(self):
        while self.pending:
            self.pending.pop().join()


def test_synchronized_clock_covers_queued_work_that_a_plain_clock_misses():
    device = AsyncDevice(0.05)
    t0 = time.perf_counter()
    device.launch()
    assert time.perf_counter() - t0 < 0.05  # the launch returns before the work is done
    device.sync()
    clock = synchronized_clock(device.sync)
    t0 = clock()
    device.launch()
    assert clock() - t0 >= 0.05


def test_cpu_timer_reports_the_median_call():
    durations = iter([0.002] * 3 + [0.02, 0.02, 0.02, 0.002, 0.02])
    timing = time_fn(lambda: time.sleep(next(durations)), torch.device("cpu"), warmup=3, iters=5)
    assert 0.019 < timing.median_s < 0.03
    assert timing.samples == 5


@pytest.mark.cuda
def test_cuda_timer_measures_device_time_not_launch_time():
    cycles = 50_000_000  # ~25 ms at 2 GHz
    timing = time_fn(lambda: torch.cuda._sleep(cycles), torch.device("cuda"), warmup=1, iters=3)
    assert timing.median_s > 0.01


def test_rotation_keeps_two_input_sets_only_for_cuda_inputs_larger_than_l2():
    made = []
    big = Rotation(lambda: made.append(1) or (len(made),), 2 * L2_BYTES, torch.device("cuda"))
    assert [big()[0] for _ in range(4)] == [1, 2, 1, 2]
    assert len(Rotation(lambda: (0,), L2_BYTES // 2, torch.device("cuda")).sets) == 1
    assert len(Rotation(lambda: (0,), 2 * L2_BYTES, torch.device("cpu")).sets) == 1


def test_fusion_shapes_are_the_models_real_branch_shapes():
    model = HRNet("w32", head="features").eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 250, 190))
    assert [tuple(f.shape[-2:]) for f in feats] == branch_sizes(250, 190)
    shapes = fusion_shapes("w32", (250, 190), 1)
    assert [s.base for s in shapes] == [tuple(f.shape) for f in feats]
    assert shapes[0].low == ((1, 32, 32, 24), (1, 32, 16, 12), (1, 32, 8, 6))
    assert [s.num_same for s in shapes] == [0, 1, 2, 3]


def _result(ms, spread=0.01, backend="reference"):
    return suites.Result("op", "case", backend, ms=ms, spread=spread, speedup=1.0, max_abs_err=0.0, gb_per_s=1.0)


def test_compare_flags_a_planted_2x_regression_and_not_a_3_percent_wobble():
    old = [_result(1.0), _result(2.0, backend="cpu")]
    wobble, matched = results.compare(old, [_result(1.03), _result(1.94, backend="cpu")])
    assert wobble == [] and matched == 2
    slow, _ = results.compare(old, [_result(2.0), _result(2.06, backend="cpu")])
    assert [r.key for r in slow] == [("op", "case", "reference")]
    assert slow[0].ratio == pytest.approx(2.0)
    noisy, _ = results.compare([_result(1.0, spread=0.3)], [_result(1.5, spread=0.3)])
    assert noisy == []  # within what that run's own noise allows


def test_json_round_trip(tmp_path):
    found = suites.bench_fusion_sums(
        "w18_small_v1", (32, 24), 1, suites.Settings(torch.device("cpu"), torch.float32, iters=2)
    )
    meta = results.environment(torch.device("cpu"), "hrnet-fast bench")
    results.save_json(tmp_path / "r.json", found, meta)
    meta2, again = results.load_json(tmp_path / "r.json")
    assert again == found and meta2 == meta
    (tmp_path / "bad.json").write_text(json.dumps({"results": []}))
    with pytest.raises(ValueError, match="not a results file"):
        results.load_json(tmp_path / "bad.json")


def test_cli_prints_tables_writes_json_and_plot_and_compares(tmp_path, capsys):
    args = ["bench", "--arch", "w18_small_v1", "--size", "64x48", "--batch", "1", "--iters", "2", "--device", "cpu"]
    assert main([*args, "--json", str(tmp_path / "a.json"), "--plot", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "copy bandwidth" in out
    for title in ["op: upsample_sum w18_small_v1 stage4 64x48 b1 nearest", "op: upsample_concat", "model: pose"]:
        assert title in out
    assert "vs reference" in out and "GB/s" in out and "img/s" in out
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"

    meta, found = results.load_json(tmp_path / "a.json")
    faster = [dataclasses.replace(r, ms=r.ms / 10) for r in found]  # a 10x faster "old" run
    results.save_json(tmp_path / "old.json", faster, meta)
    assert main([*args, "--suite", "ops", "--compare", str(tmp_path / "old.json")]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--size", "256by192"])
    assert "size must look like 256x192" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--batch", "0"])
