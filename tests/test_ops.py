"""The reference ops: math against independent formulas, and input validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrnet_fast import available_backends
from hrnet_fast.ops import fusion_branch, upsample_concat, upsample_sum


def _nearest_index(dst: int, src: int) -> torch.Tensor:
    """PyTorch's legacy nearest rule for size=: src index = floor(dst * src / dst_size)."""
    return torch.clamp((torch.arange(dst) * (src / dst)).floor().long(), max=src - 1)


@pytest.mark.parametrize("relu", [True, False])
def test_nearest_upsample_sum_matches_explicit_gather_on_sizes_that_do_not_divide(relu):
    base = torch.randn(2, 5, 63, 48)
    same = [torch.randn_like(base) for _ in range(2)]
    low = [torch.randn(2, 5, 32, 24), torch.randn(2, 5, 16, 12), torch.randn(2, 5, 7, 5)]
    expected = base + same[0] + same[1]
    for t in low:
        rows, cols = _nearest_index(63, t.shape[2]), _nearest_index(48, t.shape[3])
        expected = expected + t[:, :, rows][:, :, :, cols]
    if relu:
        expected = expected.clamp_min(0)
    out = upsample_sum(base, same, low, mode="nearest", relu=relu)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_upsample_sum_is_interpolate_to_the_base_size(align_corners):
    base = torch.randn(1, 3, 25, 19)
    low = [torch.randn(1, 3, 13, 10), torch.randn(1, 3, 4, 3)]
    expected = base.clone()
    for t in low:
        expected += F.interpolate(t, size=(25, 19), mode="bilinear", align_corners=align_corners)
    out = upsample_sum(base, (), low, mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(out, expected.relu(), rtol=1e-6, atol=1e-6)


def test_upsample_concat_places_each_branch_at_the_first_branch_size():
    xs = [torch.randn(2, 4, 15, 11), torch.randn(2, 6, 8, 6), torch.randn(2, 2, 4, 3)]
    out = upsample_concat(xs, mode="bilinear", align_corners=False)
    assert out.shape == (2, 12, 15, 11)
    torch.testing.assert_close(out[:, :4], xs[0])
    torch.testing.assert_close(out[:, 4:10], F.interpolate(xs[1], size=(15, 11), mode="bilinear"))
    torch.testing.assert_close(out[:, 10:], F.interpolate(xs[2], size=(15, 11), mode="bilinear"))


def test_upsample_sum_rejects_bad_inputs():
    base = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"low\[0\] has 3 channels, base has 4"):
        upsample_sum(base, low=[torch.randn(1, 3, 4, 4)])
    with pytest.raises(ValueError, match=r"same\[0\] has shape \(1, 4, 8, 7\)"):
        upsample_sum(base, same=[torch.randn(1, 4, 8, 7)])
    with pytest.raises(TypeError, match=r"low\[0\] is torch.float16 but base is torch.float32"):
        upsample_sum(base, low=[torch.randn(1, 4, 4, 4, dtype=torch.float16)])
    with pytest.raises(ValueError, match=r"low\[0\] is on meta but base is on cpu"):
        upsample_sum(base, low=[torch.randn(1, 4, 4, 4, device="meta")])
    with pytest.raises(ValueError, match="must be 4-D"):
        upsample_sum(base[0])
    with pytest.raises(ValueError, match="batch 2 but base has batch 1"):
        upsample_sum(base, low=[torch.randn(2, 4, 4, 4)])
    with pytest.raises(TypeError, match="floating-point"):
        upsample_sum(base.long())
    with pytest.raises(ValueError, match="upsampling mode"):
        upsample_sum(base, mode="area")
    with pytest.raises(ValueError, match="align_corners=True only applies"):
        upsample_sum(base, mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match="at least one tensor"):
        upsample_concat([])


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_empty_maps_get_one_clear_error_on_every_backend(backend):
    """One input check before any backend runs (a zero-sized map used to crash the Triton backend)."""
    base, low = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3)
    weights = ([], [], [low], [torch.randn(4, 4, 1, 1)], torch.randn(4))
    for empty in [torch.randn(1, 4, 0, 3), torch.randn(1, 4, 3, 0)]:
        with pytest.raises(ValueError, match=r"low\[0\] is empty .* channels, height and width must be >= 1"):
            upsample_sum(base, low=[empty], backend=backend)
        with pytest.raises(ValueError, match=r"xs\[1\] is empty"):
            upsample_concat([base, empty], backend=backend)
    with pytest.raises(ValueError, match=r"xs\[1\] is empty \(shape \(1, 0, 3, 3\)\)"):
        upsample_concat([base, torch.randn(1, 0, 3, 3)], backend=backend)
    with pytest.raises(ValueError, match=r"base is empty"):
        fusion_branch(base[..., :0], *weights, backend=backend)
    empty_batch = upsample_sum(base[:0], low=[low[:0]], backend=backend)  # a batch of 0 is fine
    assert empty_batch.shape == (0, 4, 6, 6)
