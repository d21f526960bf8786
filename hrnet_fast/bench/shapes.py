"""The real tensor shapes of HRNet's fusion steps, for benchmarks at the sizes models run.

For an input H x W, branch k of an arch has C * 2^k channels (the arch's widths) and size
ceil(H / 2^(k+2)) x ceil(W / 2^(k+2)). In the fusion step of a stage with n branches, output
branch i adds i same-resolution maps (the strided-conv paths) and n-1-i lower-resolution maps
already projected to C_i channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..models.configs import get_arch


@dataclass(frozen=True)
class SumShapes:
    """Operands of one ``upsample_sum`` call: base (N, C, H, W), same maps, low maps."""

    base: tuple[int, int, int, int]
    num_same: int
    low: tuple[tuple[int, int, int, int], ...]

    def elements(self) -> int:
        """Elements read and written by an ideal fused kernel: every input once, the output once."""
        return (2 + self.num_same) * math.prod(self.base) + sum(math.prod(s) for s in self.low)


def branch_sizes(h: int, w: int, num_branches: int = 4) -> list[tuple[int, int]]:
    sizes = []
    for _ in range(2):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    for _ in range(num_branches):
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def stage_widths(arch: str, stage: int) -> tuple[int, ...]:
    spec = get_arch(arch)
    return {2: spec.stage2, 3: spec.stage3, 4: spec.stage4}[stage].num_channels


def fusion_shapes(arch: str, size: tuple[int, int], batch: int, stage: int = 4) -> list[SumShapes]:
    """One :class:`SumShapes` per output branch of the given stage's fusion step."""
    widths = stage_widths(arch, stage)
    sizes = branch_sizes(*size, len(widths))
    out = []
    for i, c in enumerate(widths):
        low = tuple((batch, c, *sizes[j]) for j in range(i + 1, len(widths)))
        out.append(SumShapes((batch, c, *sizes[i]), i, low))
    return out


def concat_shapes(arch: str, size: tuple[int, int], batch: int) -> list[tuple[int, int, int, int]]:
    """Inputs of the seg head's ``upsample_concat``: the four stage-4 branches."""
    widths = stage_widths(arch, 4)
    return [(batch, c, *hw) for c, hw in zip(widths, branch_sizes(*size, len(widths)), strict=True)]


def concat_elements(shapes: list[tuple[int, int, int, int]]) -> int:
    """Elements an ideal ``upsample_concat`` reads (every input once) and writes (the output once)."""
    n, _, h, w = shapes[0]
    return sum(math.prod(s) for s in shapes) + n * sum(s[1] for s in shapes) * h * w
