"""The flip test: mirrored heatmaps back, joint pairs swapped, the one-pixel shift, the average."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrnet_fast import HRNet
from hrnet_fast.pose import FLIP_PAIRS, flip_test
from hrnet_fast.pose.flip import flip_back, shift_right, swap_permutation


def _official_flip_back_and_shift(output_flipped: np.ndarray, pairs) -> np.ndarray:
    """lib/utils/transforms.py flip_back, then lib/core/function.py's SHIFT_HEATMAP line, restated."""
    out = output_flipped[:, :, :, ::-1].copy()
    for a, b in pairs:
        out[:, [a, b]] = out[:, [b, a]]
    out[:, :, :, 1:] = out.copy()[:, :, :, 0:-1]
    return out


def test_flip_back_and_shift_equal_the_official_steps():
    hm = torch.randn(2, 17, 8, 6)
    ours = shift_right(flip_back(hm, FLIP_PAIRS))
    np.testing.assert_array_equal(ours.numpy(), _official_flip_back_and_shift(hm.numpy(), FLIP_PAIRS))


def test_swap_permutation_pairs_left_and_right_joints():
    perm = swap_permutation(17, FLIP_PAIRS)
    assert perm[:7] == [0, 2, 1, 4, 3, 6, 5] and perm[15:] == [16, 15]
    assert sorted(perm) == list(range(17))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = HRNet("w18_small_v1", head="pose").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_flip_test_averages_the_model_and_its_mirror_like_the_official_code(tiny_model):
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        plain, mirrored = tiny_model(x), tiny_model(x.flip(3))
        expected = (plain.numpy() + _official_flip_back_and_shift(mirrored.numpy(), FLIP_PAIRS)) * 0.5
        ours = flip_test(tiny_model, x, FLIP_PAIRS)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_flip_test_on_a_symmetric_input_is_symmetric(tiny_model):
    x = torch.randn(2, 3, 64, 48)
    symmetric = (x + x.flip(3)) / 2
    with torch.no_grad():
        unshifted = flip_test(tiny_model, symmetric, FLIP_PAIRS, shift=False)
        shifted = flip_test(tiny_model, symmetric, FLIP_PAIRS)
        one_pass = tiny_model(symmetric)
    # without the shift: mirroring the result and swapping left/right joints gives it back
    torch.testing.assert_close(flip_back(unshifted, FLIP_PAIRS), unshifted, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(flip_back(one_pass, FLIP_PAIRS), one_pass, atol=1e-3)  # the model alone is not
    # with it: the mirrored half lands one column right, the plain half stays
    torch.testing.assert_close(
        2 * shifted[..., 1:] - one_pass[..., 1:],
        flip_back(one_pass, FLIP_PAIRS)[..., :-1],
        rtol=1e-4,
        atol=1e-4,
    )
