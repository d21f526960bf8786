"""Model level: pose W32 256x192 and W48 384x288, seg W48, cls W18 at 224, per backend and batch, beside
optimize(); pose W32 also beside the peer engines (torch.compile with freezing, ONNX Runtime, OpenVINO
on a CPU), in float32 and bfloat16 on a CPU, float16 on a GPU. A peer that cannot run here is skipped
with the reason ("not installed", dtype)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import BACKENDS, CLOCK, DEVICE, ON_GPU

from hrnet_fast import HRNet
from hrnet_fast.bench.peers import PeerUnavailable, device_peers
from hrnet_fast.bench.suites import COMPILE, Settings, max_abs_err, model_peers, model_runner

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
BATCHES = [1, 32, 128] if ON_GPU else [1, 8]
DTYPES = [torch.float16] if ON_GPU else [torch.float32, torch.bfloat16]
ROUNDS = 20 if ON_GPU else 5
PEERS = device_peers(DEVICE)


def _params():
    params = []
    for m in MODELS:
        w32_pose = m[:2] == ("pose", "w32")
        for b in BATCHES:
            if m[0] == "seg" and b == 128:  # 512x1024 at batch 128 is a training-sized memory footprint
                continue
            if not ON_GPU and b > 1 and not w32_pose:  # the CPU compares batch 8 on the headline model
                continue
            for dtype in DTYPES if w32_pose else DTYPES[:1]:
                names = [n for n in BACKENDS if n != COMPILE] + model_peers(DEVICE, PEERS if w32_pose else (), b)
                for name in dict.fromkeys(names):
                    dt = str(dtype).removeprefix("torch.")
                    params.append(pytest.param(m, b, dtype, name, id=f"{m[0]}-{m[1]}-b{b}-{dt}-{name}"))
    return params


@pytest.mark.parametrize(("model_case", "batch", "dtype", "engine"), _params())
def test_model_forward(benchmark, record, model_case, batch, dtype, engine):
    head, arch, size = model_case
    settings = Settings(DEVICE, dtype, channels_last=True)
    model = HRNet(arch, head=head).eval().to(DEVICE, dtype).to(memory_format=torch.channels_last)
    x = settings.tensor((batch, 3, *size))
    with torch.inference_mode():
        model.backend = "reference"
        ref = model(x)
        try:
            run = model_runner(engine, copy.deepcopy(model), x)
        except PeerUnavailable as exc:
            pytest.skip(f"{engine}: {exc}")
        out = run()
        benchmark.group = f"{head} {arch} {size[0]}x{size[1]} b{batch} {str(dtype)[6:]} channels_last"
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, engine, images=batch, max_abs_err=max_abs_err(out, ref))
