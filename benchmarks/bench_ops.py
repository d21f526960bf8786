"""Op level: ``upsample_sum`` (a stage-4 fusion step's four calls) and ``upsample_concat`` (the seg
head) at the real shapes of W32/W48, per backend vs the eager reference vs torch.compile of it; and,
on a CPU, ``winograd_conv`` (one 3x3 block conv per stage-4 branch of W32) vs oneDNN's direct conv
as ``optimize()`` ran it before, vs the eager reference."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, CLOCK, DEVICE, DTYPES, ON_GPU
from torch import Tensor

from hrnet_fast.bench.shapes import branch_sizes, concat_elements, concat_shapes, fusion_shapes, stage_widths
from hrnet_fast.bench.suites import COMPILE, Settings, concat_impl, make_sum_inputs, max_abs_err, sum_impl
from hrnet_fast.bench.timer import Rotation
from hrnet_fast.ops import (
    conv_bias_act,
    upsample_concat_reference,
    upsample_sum_reference,
    winograd_conv,
    winograd_conv_reference,
    winograd_panel,
)
from hrnet_fast.ops.conv_act import prepack_weight

pytestmark = pytest.mark.benchmark(timer=CLOCK)

# (arch, input size, batch): pose 256x192 and 384x288, seg 512x1024; reduced on the CPU.
SUM_CASES = (
    [("w32", (256, 192), 32), ("w32", (256, 192), 128), ("w48", (384, 288), 32), ("w48", (512, 1024), 2)]
    if ON_GPU
    else [("w32", (256, 192), 2), ("w48", (384, 288), 1)]
)
CONCAT_CASES = [("w48", (512, 1024), 2 if ON_GPU else 1)]
LAYOUTS = {"nchw": False, "channels_last": True}


def _params(cases, modes):
    """Every combination, except torch.compile on the CPU beyond fp32 NCHW (minutes of compiling)."""
    out = []
    for case in cases:
        for mode in modes:
            for dtype in DTYPES:
                for layout, cl in LAYOUTS.items():
                    for backend in BACKENDS:
                        if backend == COMPILE and not ON_GPU and (dtype != torch.float32 or cl):
                            continue
                        ident = (
                            f"{case[0]}-{case[1][0]}x{case[1][1]}-b{case[2]}-{mode}-{str(dtype)[6:]}-{layout}-{backend}"
                        )
                        out.append(pytest.param(case, mode, dtype, cl, backend, id=ident))
    return out


def _group(op, case, mode, dtype, cl):
    arch, (h, w), batch = case
    return f"{op} {arch} {h}x{w} b{batch} {mode} {str(dtype)[6:]} {'CL' if cl else 'NCHW'}"


@pytest.mark.parametrize(("case", "mode", "dtype", "cl", "backend"), _params(SUM_CASES, ["nearest", "bilinear"]))
def test_upsample_sum(benchmark, record, case, mode, dtype, cl, backend):
    arch, size, batch = case
    settings = Settings(DEVICE, dtype, cl)
    shapes = fusion_shapes(arch, size, batch)
    nbytes = sum(s.elements() for s in shapes) * dtype.itemsize

    rotation = Rotation(lambda: make_sum_inputs(shapes, settings), nbytes, DEVICE)
    impl = sum_impl(backend)
    args = rotation.sets[0]
    with torch.inference_mode():
        out = [impl(b, s, lo, mode, False, True) for b, s, lo in args]
        ref = [upsample_sum_reference(b, s, lo, mode, False, True) for b, s, lo in args]
        benchmark.group = _group("upsample_sum", case, mode, dtype, cl)
        benchmark(lambda: [impl(b, s, lo, mode, False, True) for b, s, lo in rotation()])
    record(benchmark, backend, nbytes=nbytes, max_abs_err=max_abs_err(out, ref))


@pytest.mark.parametrize(("case", "mode", "dtype", "cl", "backend"), _params(CONCAT_CASES, ["bilinear"]))
def test_upsample_concat(benchmark, record, case, mode, dtype, cl, backend):
    arch, size, batch = case
    settings = Settings(DEVICE, dtype, cl)
    shapes = concat_shapes(arch, size, batch)
    nbytes = concat_elements(shapes) * dtype.itemsize
    rotation = Rotation(lambda: [settings.tensor(s) for s in shapes], nbytes, DEVICE)
    impl = concat_impl(backend)
    with torch.inference_mode():
        out = impl(rotation.sets[0], mode, False)
        ref = upsample_concat_reference(rotation.sets[0], mode, False)
        benchmark.group = _group("upsample_concat", case, mode, dtype, cl)
        benchmark(lambda: impl(rotation(), mode, False))
    record(benchmark, backend, nbytes=nbytes, max_abs_err=max_abs_err(out, ref))


CONV_BATCHES = [1, 8]
CONV_IMPLS = ["reference", "onednn", "cpp"]


def _block_convs(batch: int) -> list[tuple[Tensor, ...]]:
    """One 3x3 conv per stage-4 branch of W32 pose 256x192: (x, weight, panel, bias, residual)."""
    convs = []
    for c, (h, w) in zip(stage_widths("w32", 4), branch_sizes(256, 192), strict=True):
        x, r = (torch.randn(batch, c, h, w).contiguous(memory_format=torch.channels_last) for _ in range(2))
        weight = torch.randn(c, c, 3, 3) / (3 * c**0.5)
        convs.append((x, weight, winograd_panel(weight), torch.randn(c), r))
    return convs


@pytest.mark.skipif(ON_GPU, reason="winograd_conv has CPU kernels only; GPUs run cuDNN's convs")
@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("batch", CONV_BATCHES, ids=lambda b: f"b{b}")
def test_winograd_conv(benchmark, record, batch, impl):
    convs = _block_convs(batch)
    packed = [prepack_weight(w, stride=1, padding=1, input_shape=tuple(x.shape)) for x, w, *_ in convs]

    def run():
        if impl == "onednn":  # the direct conv with prepacked weights, as optimize() runs non-3x3 convs
            return [
                conv_bias_act(x, w, b, padding=1, residual=r, packed=p)
                for (x, w, _, b, r), p in zip(convs, packed, strict=True)
            ]
        return [winograd_conv(x, w, u, b, residual=r, backend=impl) for x, w, u, b, r in convs]

    with torch.inference_mode():
        out, ref = run(), [winograd_conv_reference(*conv, True) for conv in convs]
        benchmark.group = f"winograd_conv w32 stage-4 block convs b{batch} float32 CL"
        benchmark(run)
    record(benchmark, impl, max_abs_err=max_abs_err(out, ref))
