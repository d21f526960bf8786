"""Module level: one stage-4 HighResolutionModule (branches + fusion) of W32 and W48, per backend; in
eval the fused backends (cpp, triton) run its fusion step at level 2 (one fusion_branch call per
output branch), beside the reference and torch.compile."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, CLOCK, DEVICE, DTYPES, ON_GPU

from hrnet_fast.bench.shapes import branch_sizes
from hrnet_fast.bench.suites import COMPILE, Settings, max_abs_err
from hrnet_fast.models import HighResolutionModule, get_arch

pytestmark = pytest.mark.benchmark(timer=CLOCK)

CASES = [("w32", (256, 192), 32), ("w48", (384, 288), 32)] if ON_GPU else [("w32", (256, 192), 2)]
ROUNDS = 20 if ON_GPU else 5


def _params():
    return [
        pytest.param(case, dtype, backend, id=f"{case[0]}-b{case[2]}-{str(dtype)[6:]}-{backend}")
        for case in CASES
        for dtype in DTYPES
        for backend in BACKENDS
        if not (backend == COMPILE and not ON_GPU and dtype != torch.float32)
    ]


@pytest.mark.parametrize(("case", "dtype", "backend"), _params())
def test_stage4_module(benchmark, record, case, dtype, backend):
    arch, size, batch = case
    spec = get_arch(arch).stage4
    settings = Settings(DEVICE, dtype, channels_last=ON_GPU)
    module = HighResolutionModule(spec, spec.num_channels).eval().to(DEVICE, dtype)
    xs = [settings.tensor((batch, c, *hw)) for c, hw in zip(spec.num_channels, branch_sizes(*size), strict=True)]
    with torch.inference_mode():
        module.fuse_layers.backend = "reference"
        ref = module(list(xs))
        run = module
        if backend == COMPILE:
            run = torch.compile(module, dynamic=False)
        else:
            module.fuse_layers.backend = backend
        out = run(list(xs))
        benchmark.group = f"HighResolutionModule {arch} stage4 b{batch} {str(dtype)[6:]}"
        benchmark.pedantic(lambda: run(list(xs)), rounds=ROUNDS, warmup_rounds=2)
    record(benchmark, backend, images=batch, max_abs_err=max_abs_err(out, ref))
