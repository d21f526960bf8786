"""MultiResolutionFusion against the official composition (nn.Upsample inside fuse_layers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hrnet_fast.nn import MultiResolutionFusion


def official_fusion(fuse: MultiResolutionFusion, xs, mode, align_corners):
    """The official forward: y = sum_j fuse_layers[i][j](x_j) with upsampling after the 1x1 path."""
    outs = []
    for i, row in enumerate(fuse):
        y = None
        for j, x in enumerate(xs):
            if j == i:
                t = x
            elif j > i:
                up = nn.Upsample(scale_factor=2 ** (j - i), mode=mode, align_corners=align_corners or None)
                t = up(row[j](x))
            else:
                t = row[j](x)
            y = t if y is None else y + t
        outs.append(torch.relu(y))
    return outs


def _branches(n, channels, h, w):
    return [torch.randn(n, c, h // 2**k, w // 2**k) for k, c in enumerate(channels)]


@pytest.mark.parametrize(("mode", "align_corners"), [("nearest", False), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("num_outputs", [None, 1])
def test_fusion_equals_the_official_composition(mode, align_corners, num_outputs):
    channels = (8, 16, 24, 32)
    fuse = MultiResolutionFusion(channels, num_outputs, upsample=mode, align_corners=align_corners).eval()
    for m in fuse.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    xs = _branches(2, channels, 32, 24)
    with torch.no_grad():
        ours = fuse(xs)
        ref = official_fusion(fuse, xs, mode, align_corners)
    assert len(ours) == (num_outputs or 4)
    for o, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


def test_parameter_layout_is_fuse_layers_i_j():
    keys = set(MultiResolutionFusion((8, 16, 32)).state_dict())
    assert "0.1.0.weight" in keys and "0.1.1.running_var" in keys  # 1x1 conv + BN up path
    assert "2.0.0.0.weight" in keys and "2.0.1.1.bias" in keys  # two stride-2 3x3 steps down
    assert not any(k.startswith(("0.0.", "1.1.", "2.2.")) for k in keys)  # identity: None


def test_branch_count_and_channel_errors():
    fuse = MultiResolutionFusion((8, 16))
    with pytest.raises(ValueError, match="expects 2 branches, got 1"):
        fuse([torch.randn(1, 8, 8, 8)])
    with pytest.raises(ValueError, match=r"branch 1 must be \(N, 16, H, W\), got \(1, 12, 4, 4\)"):
        fuse([torch.randn(1, 8, 8, 8), torch.randn(1, 12, 4, 4)])
    with pytest.raises(ValueError, match="at least two branches"):
        MultiResolutionFusion((8,))
    with pytest.raises(ValueError, match="num_outputs must be in 1..2"):
        MultiResolutionFusion((8, 16), 3)
