"""The HRNet architecture table: the official stage configurations of w18_small_v1 ... w64.

Every arch shares the stem (two stride-2 3x3 convs to 64 channels) and has four stages. Stage 1 is a
run of Bottleneck blocks at 1/4 resolution (``layer1``); stages 2-4 are ``num_modules`` repeats of a
HighResolutionModule with 2, 3 and 4 branches of BasicBlocks, at widths C, 2C, 4C, 8C.
The numbers are those of the official experiment files (HRNet-Image-Classification
``experiments/cls_hrnet_*.yaml``; the pose and segmentation repos use the same stages).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``num_modules`` modules, each with ``len(num_blocks)`` branches."""

    block: str  # "basic" or "bottleneck"
    num_modules: int
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]

    @property
    def num_branches(self) -> int:
        return len(self.num_blocks)


@dataclass(frozen=True)
class ArchSpec:
    """A whole backbone: stage 1 (``layer1``) and stages 2, 3, 4."""

    name: str
    stage1: StageSpec
    stage2: StageSpec
    stage3: StageSpec
    stage4: StageSpec

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of the four branches after stage 4 (C, 2C, 4C, 8C)."""
        return self.stage4.num_channels


def _standard(c: int) -> ArchSpec:
    widths = (c, 2 * c, 4 * c, 8 * c)
    return ArchSpec(
        name=f"w{c}",
        stage1=StageSpec("bottleneck", 1, (4,), (64,)),
        stage2=StageSpec("basic", 1, (4, 4), widths[:2]),
        stage3=StageSpec("basic", 4, (4, 4, 4), widths[:3]),
        stage4=StageSpec("basic", 3, (4, 4, 4, 4), widths),
    )


ARCHS: dict[str, ArchSpec] = {
    "w18_small_v1": ArchSpec(
        name="w18_small_v1",
        stage1=StageSpec("bottleneck", 1, (1,), (32,)),
        stage2=StageSpec("basic", 1, (2, 2), (16, 32)),
        stage3=StageSpec("basic", 1, (2, 2, 2), (16, 32, 64)),
        stage4=StageSpec("basic", 1, (2, 2, 2, 2), (16, 32, 64, 128)),
    ),
    "w18_small_v2": ArchSpec(
        name="w18_small_v2",
        stage1=StageSpec("bottleneck", 1, (2,), (64,)),
        stage2=StageSpec("basic", 1, (2, 2), (18, 36)),
        stage3=StageSpec("basic", 3, (2, 2, 2), (18, 36, 72)),
        stage4=StageSpec("basic", 2, (2, 2, 2, 2), (18, 36, 72, 144)),
    ),
    **{f"w{c}": _standard(c) for c in (18, 30, 32, 40, 44, 48, 64)},
}


def get_arch(arch: str | ArchSpec) -> ArchSpec:
    """Look an arch up by name (case-insensitive, "hrnet_" prefix allowed) or pass a spec through."""
    if isinstance(arch, ArchSpec):
        return arch
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a name such as 'w32' or an ArchSpec, got {type(arch).__name__}")
    key = arch.lower().removeprefix("hrnet_").removeprefix("hrnetv2_")
    if key not in ARCHS:
        raise ValueError(f"unknown HRNet arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[key]
