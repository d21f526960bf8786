"""Heatmap decoding: argmax, the official quarter-pixel rule, DARK, and the way back to the image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hrnet_fast.pose import decode_heatmaps
from hrnet_fast.pose.decode import argmax_coords, dark_refine, gaussian_kernel, quarter_offset
from hrnet_fast.pose.transforms import apply_affine, crop_matrices

H, W = 64, 48


def gaussian_heatmaps(peaks: torch.Tensor, height: int = H, width: int = W, sigma: float = 2.0) -> torch.Tensor:
    """Peaks (N, J, 2) as x, y -> heatmaps (N, J, H, W) = exp(-|p - peak|^2 / (2 sigma^2)), float64."""
    ys = torch.arange(height, dtype=torch.float64).view(1, 1, height, 1)
    xs = torch.arange(width, dtype=torch.float64).view(1, 1, 1, width)
    px, py = peaks[..., 0, None, None], peaks[..., 1, None, None]
    return torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))


def _random_peaks(n: int, j: int, seed: int, margin: float = 4.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, j, 2, generator=gen, dtype=torch.float64)
    return u * torch.tensor([W - 1 - 2 * margin, H - 1 - 2 * margin], dtype=torch.float64) + margin


def test_argmax_gives_the_first_maximum_and_zeros_where_the_maximum_is_not_positive():
    hm = torch.full((1, 3, 5, 4), -1.0)
    hm[0, 0, 3, 2] = 2.0
    hm[0, 1, 1, 1] = hm[0, 1, 2, 3] = 0.5  # a tie: the first in row-major order wins
    coords, maxvals = argmax_coords(hm)
    assert coords.tolist() == [[[2.0, 3.0], [1.0, 1.0], [0.0, 0.0]]]
    assert maxvals.tolist() == [[2.0, 0.5, -1.0]]


def _official_quarter_offset(hm: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """get_final_preds' post-processing loop, restated."""
    coords = coords.copy()
    for n in range(coords.shape[0]):
        for p in range(coords.shape[1]):
            px, py = math.floor(coords[n, p, 0] + 0.5), math.floor(coords[n, p, 1] + 0.5)
            if 1 < px < hm.shape[3] - 1 and 1 < py < hm.shape[2] - 1:
                m = hm[n, p]
                diff = np.array([m[py, px + 1] - m[py, px - 1], m[py + 1, px] - m[py - 1, px]])
                coords[n, p] += np.sign(diff) * 0.25
    return coords


def test_quarter_offset_follows_the_official_loop_everywhere_including_borders():
    gen = torch.Generator().manual_seed(0)
    hm = torch.rand(3, 17, 9, 7, generator=gen)
    hm[0, :4] = 0.0  # flat maps: no offset
    coords, _ = argmax_coords(hm)
    coords[1, :8] = torch.tensor([[0, 0], [1, 4], [2, 1], [5, 2], [6, 4], [3, 7], [3, 8], [4, 6]]).float()
    expected = _official_quarter_offset(hm.numpy(), coords.numpy())
    np.testing.assert_array_equal(quarter_offset(hm, coords).numpy(), expected)


def _darkpose_reference(hm: np.ndarray, coords: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DarkPose's gaussian_blur + log + taylor, restated with numpy loops (OpenCV's kernel for sigma=0)."""
    g = gaussian_kernel(kernel, torch.float64, torch.device("cpu")).numpy()
    r = kernel // 2
    out = coords.copy()
    for n in range(hm.shape[0]):
        for p in range(hm.shape[1]):
            m = hm[n, p]
            padded = np.pad(m, 2 * r)
            blurred = np.zeros_like(m)
            for y in range(m.shape[0]):
                for x in range(m.shape[1]):
                    patch = padded[y + r : y + 3 * r + 1, x + r : x + 3 * r + 1]
                    blurred[y, x] = g @ patch @ g
            blurred *= m.max() / blurred.max()
            L = np.log(np.maximum(blurred, 1e-10))
            px, py = int(coords[n, p, 0]), int(coords[n, p, 1])
            if 1 < px < m.shape[1] - 2 and 1 < py < m.shape[0] - 2:
                dx = 0.5 * (L[py, px + 1] - L[py, px - 1])
                dy = 0.5 * (L[py + 1, px] - L[py - 1, px])
                dxx = 0.25 * (L[py, px + 2] - 2 * L[py, px] + L[py, px - 2])
                dxy = 0.25 * (L[py + 1, px + 1] - L[py - 1, px + 1] - L[py + 1, px - 1] + L[py - 1, px - 1])
                dyy = 0.25 * (L[py + 2, px] - 2 * L[py, px] + L[py - 2, px])
                hess = np.array([[dxx, dxy], [dxy, dyy]])
                if dxx * dyy - dxy**2 != 0:
                    out[n, p] -= np.linalg.inv(hess) @ np.array([dx, dy])
    return out


def test_dark_follows_the_darkpose_reference_on_noisy_heatmaps():
    gen = torch.Generator().manual_seed(1)
    peaks = _random_peaks(2, 5, seed=1, margin=1.0)
    hm = gaussian_heatmaps(peaks, 20, 16) + 0.05 * torch.rand(2, 5, 20, 16, generator=gen, dtype=torch.float64)
    coords, _ = argmax_coords(hm)
    expected = _darkpose_reference(hm.numpy(), coords.numpy())
    np.testing.assert_allclose(dark_refine(hm, coords).numpy(), expected, atol=1e-9)
    assert not np.array_equal(expected, coords.numpy())


def test_gaussian_kernel_is_opencvs_for_sigma_zero():
    k11 = gaussian_kernel(11, torch.float64, torch.device("cpu"))
    sigma = 0.3 * ((11 - 1) * 0.5 - 1) + 0.8  # = 2.0
    torch.testing.assert_close(k11[6] / k11[5], torch.tensor(math.exp(-1 / (2 * sigma**2)), dtype=torch.float64))
    torch.testing.assert_close(k11.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert gaussian_kernel(3, torch.float64, torch.device("cpu")).tolist() == [0.25, 0.5, 0.25]
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(4, torch.float64, torch.device("cpu"))


def test_sub_pixel_gaussian_peaks_are_found_within_the_official_error_and_dark_does_better():
    peaks = _random_peaks(8, 17, seed=2)
    hm = gaussian_heatmaps(peaks).float()
    coords, maxvals = argmax_coords(hm)
    official = quarter_offset(hm, coords)
    err_official = (official - peaks.float()).abs()
    assert err_official.max() <= 0.25 + 1e-5  # per axis: |delta - sign(delta)/4| with |delta| <= 1/2
    assert err_official.mean() > 0.05  # the peaks really are off the grid
    err_dark = (dark_refine(hm, coords) - peaks.float()).abs()
    assert err_dark.max() < 0.05
    assert err_dark.mean() < err_official.mean() / 10
    assert (maxvals > 0.88).all()  # a Gaussian's value at most half a pixel per axis from its peak


def test_decoded_keypoints_map_back_to_image_coordinates():
    center = torch.tensor([[120.0, 90.0], [40.0, 300.0]])
    scale = torch.tensor([[0.9, 1.2], [0.3, 0.4]])
    image_points = center[:, None] + torch.tensor([[-20.0, 13.0], [7.5, -31.0], [0.0, 0.0]]) * scale[:, None, :1] * 2
    on_heatmap = apply_affine(image_points.double(), crop_matrices(center.double(), scale.double(), (H, W)))
    hm = gaussian_heatmaps(on_heatmap).float()
    for dark, tol in ((False, 0.25), (True, 0.05)):
        keypoints = decode_heatmaps(hm, center, scale, dark=dark)
        assert keypoints.shape == (2, 3, 3)
        pixel = scale[:, 0] * 200 / W  # image pixels per heatmap pixel
        err = (keypoints[..., :2] - image_points).abs() / pixel.view(2, 1, 1)
        assert err.max() <= tol + 1e-4, (dark, err.max())
        torch.testing.assert_close(keypoints[..., 2], hm.amax(dim=(2, 3)))
