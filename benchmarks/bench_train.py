"""Training steps (forward + backward + SGD step) per backend: pose W32 256x192 and seg W48 512x1024,
AMP float16 on a GPU (batches 64 and 8), float32 at reduced sizes on a CPU; images/s and the step's
activation memory (CUDA: allocator peak; CPU: bytes saved for backward)."""

from __future__ import annotations

import pytest
import torch
from conftest import CLOCK, DEVICE, ON_GPU

from hrnet_fast import HRNet
from hrnet_fast.bench.memory import step_memory_bytes
from hrnet_fast.bench.suites import default_backends

pytestmark = pytest.mark.benchmark(timer=CLOCK)

CASES = (
    [("pose", "w32", (256, 192), 64), ("seg", "w48", (512, 1024), 8)]
    if ON_GPU
    else [("pose", "w32", (256, 192), 2), ("seg", "w48", (256, 512), 1)]
)
AMP = torch.float16 if ON_GPU else None
ROUNDS = 10 if ON_GPU else 3


@pytest.mark.parametrize("backend", default_backends(DEVICE))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-b{c[3]}")
def test_train_step(benchmark, record, case, backend):
    head, arch, size, batch = case
    model = HRNet(arch, head=head, backend=backend).to(DEVICE, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=torch.float16 == AMP)
    x = torch.randn(batch, 3, *size, device=DEVICE).contiguous(memory_format=torch.channels_last)

    def unscaled_loss(backend_name: str) -> torch.Tensor:
        model.backend = backend_name
        with torch.autocast(DEVICE.type, dtype=AMP or torch.float32, enabled=AMP is not None):
            out = model(x)
        model.backend = backend
        return out.float().square().mean()

    def loss() -> torch.Tensor:
        return scaler.scale(unscaled_loss(backend))

    def step():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        scaler.step(opt)
        scaler.update()

    with torch.no_grad():
        err = (unscaled_loss(backend) - unscaled_loss("reference")).abs().item()  # same weights, same batch
    mem = step_memory_bytes(loss, DEVICE)
    benchmark.group = f"train {head} {arch} {size[0]}x{size[1]} b{batch} {'amp fp16' if AMP else 'fp32'}"
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, backend, images=batch, max_abs_err=err, mem_mb=mem / 2**20)
