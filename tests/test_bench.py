"""The benchmark harness: timing until precise, cache rotation, spread flags, JSON, regression checks, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hrnet_fast import HRNet
from hrnet_fast.bench import report, results, suites, timer
from hrnet_fast.bench.shapes import branch_sizes, fusion_shapes
from hrnet_fast.bench.timer import Rotation, StopRule, rotation_copies, time_fn
from hrnet_fast.cli import build_parser, main
from hrnet_fast.ops import available_backends

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


class AsyncDevice:
    """Work that finishes after the call returns, like a kernel launch, until ``sync`` waits for it."""

    def __init__(self, seconds: float):
        self.seconds, self.pending = seconds, []

    def launch(self):
        worker = threading.Thread(target=time.sleep, args=(self.seconds,))
        worker.start()
        self.pending.append(worker)

    def sync(self, device=None):
        while self.pending:
            self.pending.pop().join()


def test_the_benchmark_clock_covers_queued_device_work_that_a_plain_clock_misses(monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmarks_conftest", BENCHMARKS / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    assert conftest.device_clock(torch.device("cpu")) is time.perf_counter
    device = AsyncDevice(0.05)
    t0 = time.perf_counter()
    device.launch()
    assert time.perf_counter() - t0 < 0.05  # the launch returns before the work is done
    device.sync()
    monkeypatch.setattr(torch.cuda, "synchronize", device.sync)
    clock = conftest.device_clock(torch.device("cuda"))
    t0 = clock()
    device.launch()
    assert clock() - t0 >= 0.05


class FakeClock:
    """``perf_counter`` that advances only when the timed function "runs" for the next duration."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, iter(durations), 0

    def __call__(self) -> float:
        return self.now

    def run(self):
        self.calls += 1
        self.now += next(self.durations)


def _timed(monkeypatch, durations, rule, warmup=0):
    clock = FakeClock(durations)
    monkeypatch.setattr(timer.time, "perf_counter", clock)
    return time_fn(clock.run, torch.device("cpu"), warmup=warmup, rule=rule), clock


def test_cpu_timer_reports_the_median_call(monkeypatch):
    durations = [0.002] * 3 + [0.02, 0.02, 0.02, 0.002, 0.02]
    timing, clock = _timed(monkeypatch, durations, StopRule.fixed(5), warmup=3)
    assert timing.median_s == pytest.approx(0.02) and timing.samples == 5 and clock.calls == 8


def test_interleaved_rounds_time_each_engine_right_after_an_untimed_call_of_its_own():
    """settle=1: the order of calls is A A B B A A B B ..., and only each second call is timed, so an
    engine that is slow right after another engine ran (cold caches) is timed in its steady state."""
    calls: list[str] = []
    clock = {"now": 0.0}

    def engine(name: str, cold_s: float, warm_s: float):
        def run():
            clock["now"] += warm_s if calls and calls[-1] == name else cold_s
            calls.append(name)

        return run

    fns = {"a": engine("a", 5.0, 1.0), "b": engine("b", 7.0, 2.0)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timer.time, "perf_counter", lambda: clock["now"])
        timings = timer.time_interleaved(fns, torch.device("cpu"), warmup=0, rule=StopRule.fixed(3), settle=1)
    assert calls == ["a", "a", "b", "b"] * 3
    assert timings["a"].median_s == 1.0 and timings["b"].median_s == 2.0


def test_the_median_interval_is_from_order_statistics():
    timing = timer.summarize([float(v) for v in range(1, 101)])  # 1..100
    assert timing.median_s == 50.5 and (timing.low_s, timing.high_s) == (40.0, 61.0)  # ranks 40 and 61
    assert timing.spread == pytest.approx((75.75 - 25.25) / 50.5)
    few = timer.summarize([3.0, 1.0, 2.0, 9.0, 4.0])
    assert (few.low_s, few.median_s, few.high_s) == (1.0, 3.0, 9.0)  # n = 5: min and max


def test_timing_stops_once_the_median_is_precise(monkeypatch):
    rule = StopRule(min_samples=6, max_samples=500, precision=0.01, budget_s=60)
    steady, _ = _timed(monkeypatch, [0.010, 0.01005, 0.00995] * 100, rule)
    assert steady.samples == 6  # min-max within +-0.5%: the first round is enough
    wobbly, _ = _timed(monkeypatch, [0.010, 0.0102, 0.0098] * 100, rule)
    assert 6 < wobbly.samples < 100 and wobbly.precision <= 0.01  # the interval narrows to the middle third


def test_timing_of_noisy_calls_continues_until_the_budget(monkeypatch):
    noisy = [0.001, 0.003] * 1000  # the median's interval never narrows below 0.001-0.003
    rule = StopRule(min_samples=5, max_samples=1000, precision=0.01, budget_s=0.2)
    timing, clock = _timed(monkeypatch, noisy, rule)
    assert clock.now >= 0.2 and clock.now < 0.25  # no round planned past the budget
    assert 50 <= timing.samples <= 125 and timing.precision > 0.01
    capped, _ = _timed(monkeypatch, noisy, dataclasses.replace(rule, max_samples=40, budget_s=60))
    assert capped.samples == 40


def test_slow_calls_stop_at_the_budget_after_three(monkeypatch):
    rule = StopRule(min_samples=5, max_samples=100, precision=0.001, budget_s=10)
    timing, clock = _timed(monkeypatch, [6.0, 5.0] * 50, rule, warmup=1)  # a 6 s warmup: 10 s fit 2 calls
    assert timing.samples == 3 and clock.calls == 4


@pytest.mark.cuda
def test_cuda_timer_measures_device_time_not_launch_time():
    cycles = 50_000_000  # ~25 ms at 2 GHz
    timing = time_fn(lambda: torch.cuda._sleep(cycles), torch.device("cuda"), warmup=1, rule=StopRule.fixed(3))
    assert timing.median_s > 0.01


def test_rotation_makes_the_sets_between_two_uses_read_twice_the_cache(monkeypatch):
    mb = 2**20
    assert rotation_copies(64 * mb, 32 * mb) == 1  # one set already streams twice the cache
    assert rotation_copies(20 * mb, 32 * mb) == 5  # 4 other sets, 80 MB >= 64 MB
    assert rotation_copies(10 * mb, 32 * mb) == 8
    assert rotation_copies(1 * mb, 32 * mb) == 1  # would take 65 sets: it stays cache-resident
    monkeypatch.setattr(timer, "cache_bytes", lambda device: 32 * mb)
    made = []
    cpu = Rotation(lambda: made.append(1) or (len(made),), 20 * mb, torch.device("cpu"))
    assert [cpu()[0] for _ in range(7)] == [1, 2, 3, 4, 5, 1, 2]  # the CPU rotates as a GPU does


def test_cache_size_comes_from_the_os_and_the_driver(tmp_path, monkeypatch):
    for index, (level, kind, size) in enumerate(
        [(1, "Data", "48K"), (1, "Instruction", "32K"), (3, "Unified", "32768K"), (2, "Unified", "1024K")]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")
    assert timer._sysfs_last_level_cache(tmp_path) == 32 * 2**20
    assert timer._sysfs_last_level_cache(tmp_path / "missing") is None
    assert timer.cache_bytes(torch.device("cpu")) > 2**20
    props = SimpleNamespace(L2_cache_size=50 * 2**20)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    assert timer.cache_bytes.__wrapped__(torch.device("cuda")) == 50 * 2**20


def _row(backend, speedup, low, high):
    return suites.Result("op", "case", backend, 1.0, 0.02, speedup, 0.0, samples=9, speedup_low=low, speedup_high=high)


def test_a_speedup_whose_interval_holds_one_is_flagged_within_noise():
    assert _row("cpu", 1.05, 0.97, 1.12).within_noise  # +5%, but the interval allows -3%
    assert _row("cpu", 0.95, 0.90, 1.01).within_noise
    assert not _row("cpu", 1.30, 1.10, 1.45).within_noise
    assert not _row("cpu", 42.0, 11.0, 90.0).within_noise  # a very noisy but clear speedup
    assert not _row("reference", 1.0, 0.9, 1.1).within_noise
    text = report.render_case([_row("reference", 1.0, 0.9, 1.1), _row("cpu", 1.05, 0.97, 1.12), _row("x", 4, 3, 5)])
    flagged = [line for line in text.splitlines() if report.NOISE_NOTE in line]
    assert len(flagged) == 1 and flagged[0].split()[0] == "cpu" and "0.97-1.12" in flagged[0]
    assert "spread" in text and " n " in text and "95% interval" in text


def test_results_carry_the_speedups_interval_from_both_medians():
    settings = suites.Settings(torch.device("cpu"), torch.float32, rule=StopRule.fixed(5))
    found = suites.bench_fusion_sums("w18_small_v1", (32, 24), 1, settings, backends=FAST_BACKENDS)
    ref = found[0]
    assert ref.backend == "reference" and ref.samples == 5 and len(found) == len(FAST_BACKENDS)
    for r in found:
        assert r.speedup == pytest.approx(ref.ms / r.ms)
        assert r.speedup_low <= r.speedup <= r.speedup_high
        assert r.max_abs_err < 1e-5  # compared on the same inputs as the reference


def test_the_rotation_restarts_so_each_backend_is_compared_on_the_reference_inputs(monkeypatch):
    nbytes = 4 * sum(s.elements() for s in fusion_shapes("w18_small_v1", (64, 48), 1))
    monkeypatch.setattr(timer, "cache_bytes", lambda device: nbytes)  # as large as the inputs: 3 sets
    settings = suites.Settings(torch.device("cpu"), torch.float32, rule=StopRule.fixed(4))
    found = suites.bench_fusion_sums("w18_small_v1", (64, 48), 1, settings, backends=FAST_BACKENDS)
    assert len(found) == len(FAST_BACKENDS) == 2 and all(r.max_abs_err < 1e-5 for r in found)


def test_the_chart_has_a_title_value_labels_and_interval_whiskers():
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.container import BarContainer

    found = [_row("reference", 1.0, 0.9, 1.1), _row("cpu", 4.0, 3.5, 4.8)]
    fig = report.speedup_figure(found, "cpu: float32, batch 8, channels_last")
    ax = fig.axes[0]
    assert ax.get_title() == "cpu: float32, batch 8, channels_last"
    assert {t.get_text() for t in ax.texts} >= {"1.00", "4.00"}
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.errorbar is not None for b in bars] == [True, True]
    (low, high), *_ = bars[1].errorbar.lines[2][0].get_segments()
    assert (low[1], high[1]) == pytest.approx((3.5, 4.8))  # the whisker spans the speedup's interval
    matplotlib.pyplot.close(fig)


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
        "w18_small_v1", (32, 24), 1, suites.Settings(torch.device("cpu"), torch.float32, rule=StopRule.fixed(2))
    )
    meta = results.environment(torch.device("cpu"), "hrnet-fast bench")
    results.save_json(tmp_path / "r.json", found, meta)
    meta2, again = results.load_json(tmp_path / "r.json")
    assert again == found and meta2 == meta
    (tmp_path / "bad.json").write_text(json.dumps({"results": []}))
    with pytest.raises(ValueError, match="not a results file"):
        results.load_json(tmp_path / "bad.json")


FAST_BACKENDS = [b for b in available_backends("cpu") if b != "triton"]  # triton: the slow interpreter here
TINY = ["bench", "--arch", "w18_small_v1", "--size", "64x48", "--batch", "1", "--iters", "2", "--device", "cpu"]
TINY += ["--backend", *FAST_BACKENDS]


def test_cli_prints_tables_writes_json_and_plot_and_compares(tmp_path, capsys):
    assert main([*TINY, "--json", str(tmp_path / "a.json"), "--plot", str(tmp_path / "a.png")]) == 0
    captured = capsys.readouterr()
    assert "copy bandwidth" in captured.out
    for title in ["op: upsample_sum w18_small_v1 stage4 64x48 b1 nearest", "op: upsample_concat", "model: pose"]:
        assert title in captured.out
    assert "float32 channels_last" in captured.out  # the default layout
    assert "vs reference" in captured.out and "GB/s" in captured.out and "img/s" in captured.out
    assert "spread" in captured.out and report.LEGEND in captured.out
    assert "\r" not in captured.err and "\033" not in captured.err  # no progress bar drawn into a log
    steps = [ln for ln in captured.err.splitlines() if ln.startswith("[")]  # instead a line per step begun
    done, total = steps[-1][1 : steps[-1].index("]")].split("/")
    assert done == total == str(len(steps)) and "model pose" in steps[-1]
    assert steps[0].startswith("[1/") and "op upsample_sum" in steps[0]
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"

    meta, found = results.load_json(tmp_path / "a.json")
    assert all(r.samples == 2 for r in found)
    faster = [dataclasses.replace(r, ms=r.ms / 10) for r in found]  # a 10x faster "old" run
    results.save_json(tmp_path / "old.json", faster, meta)
    assert main([*TINY, "--suite", "ops", "--compare", str(tmp_path / "old.json")]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert build_parser().parse_args(["bench", "--no-channels-last"]).channels_last is False


def _no_measuring(monkeypatch):
    """Make any measurement fail the test: the command must stop before doing work."""

    def measured(*args, **kwargs):
        raise AssertionError("the benchmark ran before the command line was checked")

    monkeypatch.setattr(timer, "copy_bandwidth", measured)
    monkeypatch.setattr(suites, "bench_fusion_sums", measured)


def test_plot_without_matplotlib_stops_before_any_work_with_the_install_line(tmp_path, monkeypatch, capsys):
    _no_measuring(monkeypatch)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    start = time.perf_counter()
    assert main([*TINY, "--plot", str(tmp_path / "a.png")]) == 2
    assert time.perf_counter() - start < 10
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert '--plot needs matplotlib, which is not installed: pip install -e ".[plot]"' in captured.err
    assert not (tmp_path / "a.png").exists()


def test_bad_compare_file_or_output_folder_stop_before_any_work(tmp_path, monkeypatch, capsys):
    _no_measuring(monkeypatch)
    assert main([*TINY, "--compare", str(tmp_path / "missing.json")]) == 2
    assert "--compare:" in capsys.readouterr().err
    assert main([*TINY, "--json", str(tmp_path / "no" / "a.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_script_report_is_its_json_and_its_section_under_the_runs_heading(tmp_path):
    env = results.environment(torch.device("cpu"), "python benchmarks/example.py")
    title = "Example (benchmarks/example.py)"
    results.write_report(tmp_path / "out", "example", {"rows": [1, 2]}, title, env, "\nbody\n")
    assert json.loads((tmp_path / "out" / "example.json").read_text()) == {"rows": [1, 2]}
    text = (tmp_path / "out" / "example.md").read_text()
    assert text == results.markdown_header(title, env) + "\nbody\n"
    assert text.startswith("## Example (benchmarks/example.py): ")


def test_a_script_report_goes_where_out_and_name_say(tmp_path):
    parser = argparse.ArgumentParser()
    results.add_report_arguments(parser, "example")
    assert parser.parse_args([]).out is None and parser.parse_args([]).name == "example"
    args = parser.parse_args(["--out", str(tmp_path), "--name", "example-avx2-run2"])
    env = results.environment(torch.device("cpu"), "python benchmarks/example.py")
    results.write_report(args.out, args.name, {}, "Example", env, "\nbody\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example-avx2-run2.json", "example-avx2-run2.md"]
