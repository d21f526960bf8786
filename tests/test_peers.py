"""Peer engines in the model benchmark: same weights and input, interleaved timings, missing peers as rows."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hrnet_fast import HRNet
from hrnet_fast.bench import peers, report, suites
from hrnet_fast.bench.timer import StopRule

CPU = torch.device("cpu")


def _run(dtype, names):
    settings = suites.Settings(CPU, dtype, channels_last=True, warmup=1, rule=StopRule.fixed(3))
    return {r.backend: r for r in suites.bench_model("w18_small_v1", "pose", (64, 48), 2, settings, backends=names)}


def test_onnx_peers_time_the_same_model_and_report_against_the_best_peer():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    names = ["reference", suites.OPTIMIZE, suites.OPTIMIZE_WORKERS, peers.ONNXRUNTIME, peers.OPENVINO]
    rows = _run(torch.float32, names)
    assert list(rows) == names
    best = min(rows[p].ms for p in (peers.ONNXRUNTIME, peers.OPENVINO))
    for r in rows.values():
        assert r.note is None and r.ms > 0 and r.img_per_s == pytest.approx(2 / (r.ms / 1e3))
        assert r.vs_best_peer == pytest.approx(best / r.ms)
        assert r.setup_s >= 0 and r.max_abs_err <= 1e-4  # outputs are O(1): a wrong graph would be far off
    assert rows["reference"].max_abs_err == 0.0
    assert "vs best peer" in report.render(list(rows.values()))


def test_a_peer_that_cannot_run_is_a_row_that_says_why(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    rows = _run(torch.bfloat16, ["reference", peers.ONNXRUNTIME, peers.OPENVINO, peers.COMPILE_RO_FREEZE])
    missing = rows["openvino"]
    assert missing.ms is None and "not installed" in missing.note and "[peers]" in missing.note
    if importlib.util.find_spec("onnxruntime") is not None:
        assert "no bfloat16 convolutions" in rows["onnxruntime"].note
    assert "CUDA" in rows[peers.COMPILE_RO_FREEZE].note
    assert rows["reference"].ms > 0 and rows["reference"].vs_best_peer is None  # no peer ran
    text = report.render(list(rows.values()))
    assert "not installed" in text


def test_openvino_runs_bfloat16_on_a_cpu_within_bfloat16_error():
    pytest.importorskip("openvino")
    rows = _run(torch.bfloat16, ["reference", peers.OPENVINO])
    assert rows["openvino"].ms > 0 and rows["openvino"].max_abs_err < 0.1


def test_the_worker_engine_row_needs_a_cpu_batch_of_several_images():
    model = HRNet("w18_small_v1", head="pose").eval()
    with pytest.raises(peers.PeerUnavailable, match="more than one image"):
        suites.model_runner(suites.OPTIMIZE_WORKERS, model, torch.randn(1, 3, 64, 48))
    assert suites.model_peers(CPU, [peers.OPENVINO], batch=8) == [suites.OPTIMIZE, suites.OPTIMIZE_WORKERS, "openvino"]
    assert suites.model_peers(CPU, [peers.OPENVINO], batch=1) == [suites.OPTIMIZE, peers.OPENVINO]
