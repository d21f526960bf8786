"""benchmarks/cpu_level2.py: the multiply-adds it counts for the fusion step (its GMAC/s and floor)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hrnet_fast.nn import MultiResolutionFusion

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def level2(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import cpu_level2

    return cpu_level2


@pytest.mark.parametrize(
    ("widths", "sizes"),
    [
        ([4, 8, 16, 32], [(16, 12), (8, 6), (4, 3), (2, 2)]),
        ([3, 5, 7], [(9, 7), (5, 4), (3, 2)]),  # odd sizes, odd channels
    ],
)
def test_the_step_is_counted_with_every_conv_and_projection(level2, widths, sizes):
    from cpu_roofline import conv_macs  # beside cpu_level2 on the path the fixture set

    fusion = MultiResolutionFusion(widths, backend="reference").eval()
    batch = 3
    counted = conv_macs(fusion, [torch.randn(batch, c, *hw) for c, hw in zip(widths, sizes, strict=True)])
    assert level2.step_macs(widths, sizes, batch) == counted > 0


@pytest.mark.parametrize(
    ("widths", "sizes"),
    [
        ([4, 8, 16, 32], [(16, 12), (8, 6), (4, 3), (2, 2)]),
        ([3, 5, 7], [(9, 7), (5, 4), (3, 2)]),
    ],
)
def test_the_chain_steps_are_the_earlier_steps_of_every_downsample_chain(level2, widths, sizes):
    fusion = MultiResolutionFusion(widths, backend="reference").eval()
    seen: dict[tuple, int] = {}

    def record(conv, inputs, output):
        assert conv.out_channels == conv.in_channels
        key = (conv.in_channels, tuple(inputs[0].shape[-2:]))
        seen[key] = seen.get(key, 0) + 1

    for i, row in enumerate(fusion):
        for j in range(i):
            for step in list(row[j])[:-1]:
                step[0].register_forward_hook(record)
    fusion([torch.randn(2, c, *hw) for c, hw in zip(widths, sizes, strict=True)])
    assert sorted(level2.chain_steps(widths, sizes)) == sorted((c, hw, n) for (c, hw), n in seen.items())
    assert sum(seen.values()) == sum(i - j - 1 for i in range(len(widths)) for j in range(i)) > 0
