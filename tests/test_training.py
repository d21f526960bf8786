"""Training with the fused ops: gradients, autocast, GradScaler, checkpointing, DDP, an overfit run."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from hrnet_fast import HRNet, available_backends
from hrnet_fast.bench.memory import saved_tensor_bytes
from hrnet_fast.kernels import interpreted
from hrnet_fast.testing import assert_matches

FUSED_CPU = [b for b in available_backends("cpu") if b != "reference"]
ALL_CPU = ["reference", *FUSED_CPU]
# Multi-step runs (DDP, overfitting) skip Triton's CPU interpreter, which takes minutes there; its
# training math is covered above by the gradient tests, and on a GPU by the same tests with CUDA.
COMPILED_CPU = [b for b in ALL_CPU if not (b == "triton" and interpreted())]


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _seg_step(model, x, target):
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    return loss.detach()


@pytest.mark.skipif(not FUSED_CPU, reason="no fused backend serves CPU tensors here")
@pytest.mark.parametrize("backend", FUSED_CPU)
@pytest.mark.parametrize("head", ["seg", "pose"])
def test_whole_model_gradients_equal_the_references(backend, head):
    """fp32 gradients through the fused backend are as close to float64 truth as the reference's are
    (a parameter whose true gradient is ~0, e.g. a conv bias before train-mode BN, is pure noise)."""
    ref = HRNet("w18_small_v1", head=head, backend="reference").train()
    fused = copy.deepcopy(ref)
    fused.backend = backend
    exact = copy.deepcopy(ref).double()
    x = torch.randn(2, 3, 64, 48)
    outs = [ref(x), fused(x), exact(x.double())]
    g = torch.randn_like(outs[0])
    for out in outs:
        out.backward(g.to(out.dtype))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    ref_grads, fused_grads, exact_grads = _grads(ref), _grads(fused), _grads(exact)
    assert ref_grads.keys() == fused_grads.keys() == exact_grads.keys()
    floor = 1e-6 * max(g.abs().max().item() for g in exact_grads.values())  # the noise of ~0 gradients
    for k, truth in exact_grads.items():
        assert_matches(fused_grads[k], ref_grads[k], truth, k, twice_reference=True, floor=floor)


@pytest.mark.parametrize("backend", ALL_CPU)
def test_fused_backward_saves_no_more_than_the_reference(backend):
    model = HRNet("w18_small_v1", head="seg", backend="reference").train()
    x = torch.randn(2, 3, 64, 48)
    with saved_tensor_bytes() as ref:
        model(x).sum().backward()
    model.backend = backend
    with saved_tensor_bytes() as fused:
        model(x).sum().backward()
    assert 0 < fused.total <= ref.total


@pytest.mark.parametrize("backend", ALL_CPU)
def test_autocast_gives_the_reference_dtypes_and_trains(backend):
    model = HRNet("w18_small_v1", head="seg", backend=backend, num_classes=3).train()
    x, target = torch.randn(2, 3, 64, 48), torch.randint(0, 3, (2, 16, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model.forward_features(x)
        out = model(x)
    assert [f.dtype for f in feats] == [torch.bfloat16] * 4
    assert out.dtype == torch.bfloat16
    F.cross_entropy(out.float(), target).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("backend", ALL_CPU)
def test_fp16_training_with_grad_scaler_runs(backend):
    model = HRNet("w18_small_v1", head="pose", backend=backend).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, target = torch.randn(2, 3, 64, 48), torch.rand(2, 17, 16, 12)
    before = model.final_layer.weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
        assert out.dtype == torch.float16
        scaler.scale(F.mse_loss(out.float(), target)).backward()
        scaler.step(opt)
        scaler.update()
    assert torch.isfinite(model.final_layer.weight).all()
    assert not torch.equal(model.final_layer.weight, before)


def test_stage_checkpointing_gives_the_same_step_and_batchnorm_statistics_with_less_saved():
    plain = HRNet("w18_small_v1", head="seg").train()
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint_stages = True
    x, target = torch.randn(2, 3, 64, 48), torch.randint(0, 19, (2, 16, 12))
    with saved_tensor_bytes() as saved_plain:
        loss_plain = F.cross_entropy(plain(x), target)
    loss_plain.backward()
    with saved_tensor_bytes() as saved_ckpt:
        loss_ckpt = F.cross_entropy(ckpt(x), target)
    loss_ckpt.backward()
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for k, g in _grads(plain).items():
        torch.testing.assert_close(_grads(ckpt)[k], g, rtol=1e-5, atol=1e-6, msg=k)
    for (k, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=k)  # running stats updated once, not twice
    assert saved_ckpt.total < 0.5 * saved_plain.total


def test_sync_batchnorm_conversion_keeps_the_state_dict_keys():
    model = HRNet("w18_small_v1", head="pose")
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert any(isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
    assert list(converted.state_dict()) == list(model.state_dict())
    converted.load_state_dict(model.state_dict(), strict=True)


def _heatmap_target(n: int, h: int, w: int, joints: int = 3) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    centers = torch.rand(n, joints, 2) * torch.tensor([h - 1.0, w - 1.0])
    d2 = (ys - centers[..., 0, None, None]) ** 2 + (xs - centers[..., 1, None, None]) ** 2
    return torch.exp(-d2 / 2)


def _overfit(backend: str, initial: dict, x: torch.Tensor, target: torch.Tensor, steps: int) -> list[float]:
    model = HRNet("w18_small_v1", head="pose", num_joints=3, backend=backend).train()
    model.load_state_dict(initial)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_overfit_a_synthetic_heatmap_target_exactly_as_the_reference():
    """Every backend learns the target to low loss along the reference's loss curve. Training with
    train-mode BN and Adam (whose first steps are about lr * sign(grad), so a gradient entry near
    zero flips on rounding) amplifies rounding, so after the first loss, a forward pass, the curves
    are judged against the reference's own spread: the same run with the input moved by one float32
    ulp, three times, the largest relative deviation per step."""
    initial = HRNet("w18_small_v1", head="pose", num_joints=3).state_dict()
    x, target = torch.randn(2, 3, 64, 48), _heatmap_target(2, 16, 12)
    ref = torch.tensor(_overfit("reference", initial, x, target, steps=40))
    assert ref[-1] < 0.1 * ref[0], ref
    nudged_runs = []
    for _ in range(3):
        nudged = x * (1 + 2**-23 * torch.randint(-1, 2, x.shape))
        nudged_runs.append(torch.tensor(_overfit("reference", initial, nudged, target, steps=40)))
    spread = torch.stack([(run - ref).abs() / ref for run in nudged_runs]).amax(0)
    for backend in COMPILED_CPU[1:]:
        losses = torch.tensor(_overfit(backend, initial, x, target, steps=40))
        deviation = (losses - ref).abs() / ref
        assert deviation[0] <= 1e-5, (backend, losses[0], ref[0])  # the forward pass, before any step
        assert deviation[:3].max() <= 2 * spread[:3].max() + 1e-6, (backend, deviation[:3], spread[:3])
        assert deviation.max() <= 2 * spread.max() + 1e-6, (backend, losses, ref)
        assert losses[-1] < 0.1 * losses[0]


def _ddp_worker(rank: int, world: int, init_file: str, backend: str, initial: dict, x, target, out_file: str):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = HRNet("w18_small_v1", head="seg", num_classes=3, backend=backend)
        model.load_state_dict(initial)
        ddp = nn.parallel.DistributedDataParallel(_frozen_bn(model))
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        part = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(ddp(x[part]), target[part]).backward()
            opt.step()
        if rank == 0:
            torch.save(model.state_dict(), out_file)
        # DDP's reducer goes first, so that destroy_process_group drops the group's last reference,
        # through torch's holder that releases the GIL. Dropped by the reducer (which keeps the GIL),
        # the group's destructor waited for gloo's worker thread while that thread waited for the
        # GIL to free a finished work item: a deadlock that hung one CI run here.
        del ddp, opt
        gc.collect()
    finally:
        torch.distributed.destroy_process_group()


def _frozen_bn(model: nn.Module) -> nn.Module:
    """Training mode with BatchNorm in eval mode (fine-tuning): the math is split-invariant."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return model


@pytest.mark.parametrize("backend", COMPILED_CPU)
def test_ddp_on_two_cpu_processes_equals_one_process_on_the_global_batch(backend, tmp_path):
    initial = HRNet("w18_small_v1", head="seg", num_classes=3).state_dict()
    x, target = torch.randn(4, 3, 64, 48), torch.randint(0, 3, (4, 16, 12))
    out_file = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), backend, initial, x, target, out_file), nprocs=2)

    single = HRNet("w18_small_v1", head="seg", num_classes=3, backend=backend)
    single.load_state_dict(initial)
    _frozen_bn(single)
    opt = torch.optim.SGD(single.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(single(x), target).backward()
        opt.step()
    ddp_state = torch.load(out_file, weights_only=True)
    changed = 0
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-4, atol=1e-5, msg=k)
        changed += not torch.equal(v, initial[k])
    assert changed > 100  # the steps really moved the weights


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["reference", *[b for b in available_backends("cuda") if b != "reference"]])
def test_sync_batchnorm_and_ddp_on_one_gpu_with_amp(backend, tmp_path):
    torch.distributed.init_process_group("nccl", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        plain = HRNet("w18_small_v1", head="pose", backend=backend).cuda().train()
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
        ddp = nn.parallel.DistributedDataParallel(synced, device_ids=[0])
        x, target = torch.randn(4, 3, 64, 48, device="cuda"), torch.rand(4, 17, 16, 12, device="cuda")
        losses = []
        for model in (plain, ddp):
            opt = torch.optim.SGD(model.parameters(), lr=1e-2)
            scaler = torch.amp.GradScaler("cuda")
            for _ in range(2):
                opt.zero_grad()
                with torch.autocast("cuda", dtype=torch.float16):
                    loss = F.mse_loss(model(x).float(), target)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            losses.append(loss.item())
        assert abs(losses[0] - losses[1]) <= 1e-2 * abs(losses[0])
    finally:
        torch.distributed.destroy_process_group()
