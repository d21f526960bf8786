"""Op level: ``upsample_sum`` (a stage-4 fusion step's four calls) and ``upsample_concat`` (the seg
head) at the real shapes of W32/W48, per backend vs the eager reference vs torch.compile of it."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, CLOCK, DEVICE, DTYPES, ON_GPU

from hrnet_fast.bench.shapes import concat_elements, concat_shapes, fusion_shapes
from hrnet_fast.bench.suites import COMPILE, Settings, concat_impl, make_sum_inputs, max_abs_err, sum_impl
from hrnet_fast.bench.timer import Rotation
from hrnet_fast.ops import upsample_concat_reference, upsample_sum_reference

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
