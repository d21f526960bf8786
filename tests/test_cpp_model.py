"""Whole models with the C++ extension (backend cpp) against the same models on the reference backend."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hrnet_fast import HRNet


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so every branch carries signal of its own."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_w32_pose_with_the_extension_matches_the_reference(device, fmt):
    torch.manual_seed(0)
    model = _randomize_batchnorm(HRNet("w32", head="pose")).eval().to(device, memory_format=fmt)
    x = torch.randn(2, 3, 128, 96, device=device).contiguous(memory_format=fmt)
    with torch.inference_mode():
        model.backend = "reference"
        ref = model(x)
        model.backend = "cpp"
        out = model(x)
    assert out.shape == (2, 17, 32, 24)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_training_a_bilinear_seg_model_gives_the_reference_gradients():
    """upsample_sum and upsample_concat (the seg head), forward and backward, in train mode."""
    torch.manual_seed(0)
    model = HRNet("w18_small_v1", head="seg", upsample="bilinear", num_classes=5).train()
    x = torch.randn(2, 3, 70, 58)
    grads = {}
    for backend in ("reference", "cpp"):
        model.backend = backend
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        grads[backend] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(grads["cpp"][0], grads["reference"][0], rtol=1e-4, atol=1e-5)
    for got, want in zip(grads["cpp"][1], grads["reference"][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
