"""Model level: pose W32 256x192 and W48 384x288, seg W48, cls W18 at 224, per backend and batch, beside
optimize() and the plain-PyTorch peers (CUDA graphs; torch.compile default / reduce-overhead / freezing)."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, CLOCK, DEVICE, ON_GPU

from hrnet_fast import HRNet
from hrnet_fast.bench.suites import COMPILE, MODEL_RUNNERS, Settings, max_abs_err, model_peers

pytestmark = pytest.mark.benchmark(timer=CLOCK)

MODELS = [
    ("pose", "w32", (256, 192)),
    ("pose", "w48", (384, 288)),
    ("seg", "w48", (512, 1024)),
    ("cls", "w18", (224, 224)),
]
if not ON_GPU:  # reduced sizes on the CPU
    MODELS = [
        ("pose", "w32", (256, 192)),
        ("pose", "w48", (384, 288)),
        ("seg", "w48", (256, 512)),
        ("cls", "w18", (224, 224)),
    ]
BATCHES = [1, 32, 128] if ON_GPU else [1]
DTYPE = torch.float16 if ON_GPU else torch.float32
ROUNDS = 20 if ON_GPU else 3


def _params():
    return [
        pytest.param(m, b, backend, id=f"{m[0]}-{m[1]}-b{b}-{backend}")
        for m in MODELS
        for b in BATCHES
        for backend in dict.fromkeys([*BACKENDS, *model_peers(DEVICE, compile=True)])
        if not (m[0] == "seg" and b == 128)  # 512x1024 at batch 128 is a training-sized memory footprint
        and not (backend.startswith(COMPILE) and not ON_GPU and m[1] != "w32")
    ]


@pytest.mark.parametrize(("model_case", "batch", "backend"), _params())
def test_model_forward(benchmark, record, model_case, batch, backend):
    head, arch, size = model_case
    settings = Settings(DEVICE, DTYPE, channels_last=ON_GPU)
    model = HRNet(arch, head=head).eval().to(DEVICE, DTYPE)
    if ON_GPU:
        model = model.to(memory_format=torch.channels_last)
    x = settings.tensor((batch, 3, *size))
    with torch.inference_mode():
        model.backend = "reference"
        ref = model(x)
    if backend in MODEL_RUNNERS:
        run = MODEL_RUNNERS[backend](model, x)
    else:
        model.backend = backend
        run = lambda: model(x)  # noqa: E731
    with torch.inference_mode():
        out = run()
        benchmark.group = f"{head} {arch} {size[0]}x{size[1]} b{batch} {str(DTYPE)[6:]}"
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, backend, images=batch, max_abs_err=max_abs_err(out, ref))
