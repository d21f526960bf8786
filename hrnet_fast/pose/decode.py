"""Heatmaps to keypoints in image coordinates, batched on the heatmaps' device.

Official rule (deep-high-resolution-net ``get_final_preds``): per heatmap take the argmax pixel
(x, y) and its value as the joint's score (coordinates set to 0 where the maximum is <= 0); when
1 < x < W-1 and 1 < y < H-1, move each coordinate a quarter pixel toward its higher neighbour:

    x += 0.25 * sign(hm[y, x+1] - hm[y, x-1]),    y += 0.25 * sign(hm[y+1, x] - hm[y-1, x])

DARK (Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose Estimation")
instead blurs each heatmap with a Gaussian (zero padding, rescaled to keep its maximum), takes
L = log(max(hm, 1e-10)) and, when 1 < x < W-2 and 1 < y < H-2, one Newton step of its second-order
Taylor expansion at the argmax: p -= Hess(L)^-1 grad(L), with central differences

    dx = (L[y, x+1] - L[y, x-1]) / 2,    dxx = (L[y, x+2] - 2 L[y, x] + L[y, x-2]) / 4,
    dxy = (L[y+1, x+1] - L[y-1, x+1] - L[y+1, x-1] + L[y-1, x-1]) / 4   (dy, dyy alike),

skipped where the Hessian is singular. A Gaussian heatmap has a quadratic log, so DARK recovers its
sub-pixel peak; the quarter-pixel rule errs by up to 0.25 pixel per axis.

Either way the heatmap point maps back to the image by the inverse of the crop transform at the
heatmap's size (:func:`.transforms.crop_matrices`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .transforms import apply_affine, crop_matrices, invert_affine

DARK_BLUR_KERNEL = 11
# OpenCV's getGaussianKernel(ksize, sigma<=0) uses these fixed kernels up to size 7.
_OPENCV_SMALL_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def argmax_coords(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Heatmaps (N, J, H, W) -> argmax coordinates (N, J, 2) as (x, y), and maxima (N, J).

    Coordinates are 0 where the maximum is <= 0, as in the official ``get_max_preds``.
    """
    n, j, _, w = heatmaps.shape
    maxvals, idx = heatmaps.reshape(n, j, -1).max(dim=-1)
    coords = torch.stack((idx % w, idx // w), dim=-1).to(heatmaps.dtype)
    return coords * (maxvals > 0).unsqueeze(-1), maxvals


def _at(heatmaps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """heatmaps[n, j, y[n, j], x[n, j]] for integer (N, J) positions, clamped into the map."""
    n, j, h, w = heatmaps.shape
    flat = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(-1)
    return heatmaps.reshape(n, j, -1).gather(2, flat).squeeze(-1)


def quarter_offset(heatmaps: Tensor, coords: Tensor) -> Tensor:
    """Integer coordinates (N, J, 2) -> moved 0.25 toward the higher neighbour (official rule)."""
    _, _, h, w = heatmaps.shape
    x, y = coords.long().unbind(-1)
    inside = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    diff = torch.stack(
        (
            _at(heatmaps, x + 1, y) - _at(heatmaps, x - 1, y),
            _at(heatmaps, x, y + 1) - _at(heatmaps, x, y - 1),
        ),
        dim=-1,
    )
    return coords + 0.25 * torch.sign(diff) * inside.unsqueeze(-1)


def gaussian_kernel(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """OpenCV's ``getGaussianKernel(size, 0)``: sigma = 0.3 ((size - 1)/2 - 1) + 0.8, shape (size,)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the blur kernel size must be odd and positive, got {size}")
    if size in _OPENCV_SMALL_KERNELS:
        return torch.tensor(_OPENCV_SMALL_KERNELS[size], dtype=dtype, device=device)
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _band(g: Tensor, size: int) -> Tensor:
    """The (size, size) matrix B[i, k] = g[k - i + r] (0 where |k - i| > r): B @ x correlates x with
    the kernel g of radius r along its first axis, with zero padding."""
    r = len(g) // 2
    offset = torch.arange(size, device=g.device).view(1, -1) - torch.arange(size, device=g.device).view(-1, 1)
    return torch.where(
        offset.abs() <= r,
        g[(offset + r).clamp(0, len(g) - 1)],
        torch.zeros((), dtype=g.dtype, device=g.device),
    )


def blur_keep_max(heatmaps: Tensor, kernel: int = DARK_BLUR_KERNEL) -> Tensor:
    """Gaussian blur of each map (zero padding), rescaled so its maximum equals the original's.

    The separable blur is two banded matrix products, B_H @ hm @ B_W^T (much faster than a
    one-channel convolution). A map whose blurred maximum is 0 is left unscaled (DARK's reference
    code would divide by 0).
    """
    h, w = heatmaps.shape[-2:]
    g = gaussian_kernel(kernel, heatmaps.dtype, heatmaps.device)
    blurred = _band(g, h) @ heatmaps @ _band(g, w).T
    before = heatmaps.amax(dim=(2, 3), keepdim=True)
    after = blurred.amax(dim=(2, 3), keepdim=True)
    ratio = torch.where(after == 0, torch.ones_like(after), before / after)
    return blurred * ratio


def dark_refine(heatmaps: Tensor, coords: Tensor, kernel: int = DARK_BLUR_KERNEL) -> Tensor:
    """Integer argmax coordinates (N, J, 2) -> DARK's sub-pixel estimate (N, J, 2)."""
    _, _, h, w = heatmaps.shape
    logs = torch.log(blur_keep_max(heatmaps, kernel).clamp_min(1e-10))
    x, y = coords.long().unbind(-1)

    def at(dx: int, dy: int) -> Tensor:
        return _at(logs, x + dx, y + dy)

    center = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = 0.25 * (at(2, 0) - 2 * center + at(-2, 0))
    hyy = 0.25 * (at(0, 2) - 2 * center + at(0, -2))
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy**2
    usable = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    safe_det = torch.where(usable, det, torch.ones_like(det))
    offset = torch.stack((hxy * gy - hyy * gx, hxy * gx - hxx * gy), dim=-1) / safe_det.unsqueeze(-1)
    return coords + offset * usable.unsqueeze(-1)


def decode_heatmaps(
    heatmaps: Tensor,
    center: Tensor,
    scale: Tensor,
    *,
    dark: bool = False,
    blur_kernel: int = DARK_BLUR_KERNEL,
) -> Tensor:
    """Heatmaps (N, J, H, W) of crops with centers/scales (N, 2) -> keypoints (N, J, 3) as image
    x, y and score (the heatmap maximum), in float32 or the heatmaps' wider dtype."""
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (N, J, H, W), got shape {tuple(heatmaps.shape)}")
    heatmaps = heatmaps.to(torch.promote_types(heatmaps.dtype, torch.float32))
    coords, maxvals = argmax_coords(heatmaps)
    coords = dark_refine(heatmaps, coords, blur_kernel) if dark else quarter_offset(heatmaps, coords)
    to_image = invert_affine(crop_matrices(center.to(coords), scale.to(coords), tuple(heatmaps.shape[-2:])))
    return torch.cat((apply_affine(coords, to_image), maxvals.unsqueeze(-1)), dim=-1)
