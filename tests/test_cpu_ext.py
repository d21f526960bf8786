"""benchmarks/cpu_ext.py: the interleaved timing every CPU benchmark script uses."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def cpu_ext(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import cpu_ext

    return cpu_ext


def test_alternate_reverses_the_order_every_other_round(cpu_ext):
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = cpu_ext.alternate(fns, reps=4, warmup=1)
    assert calls == list("abc" + "abc" + "cba" + "abc" + "cba")
    assert {name: len(times) for name, times in samples.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for times in samples.values() for t in times)
