"""Instance rescoring and OKS non-maximum suppression, as the official COCO evaluation does them.

Rescoring: a person's score is its box score times the mean score of its joints above 0.2 (0 when
no joint is above it). OKS between two poses a, b with J joints and areas A_a, A_b:

    OKS(a, b) = mean_j exp( -|p_a,j - p_b,j|^2 / ((2 sigma_j)^2 * 2 * ((A_a + A_b)/2 + eps)) )

over all joints (the official ``oks_iou`` with eps = 2.2e-16). The area of a pose is that of its
crop box, (200 scale_x) (200 scale_y). NMS keeps poses greedily by descending score and drops every
later pose whose OKS with a kept one exceeds the threshold (0.9 officially).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .skeleton import OKS_SIGMAS

RESCORE_THRESHOLD = 0.2
OKS_THRESHOLD = 0.9
_EPS = 2.220446049250313e-16  # numpy.spacing(1), as in the official oks_iou


def rescore(keypoints: Tensor, box_scores: Tensor, threshold: float = RESCORE_THRESHOLD) -> Tensor:
    """Keypoints (K, J, 3) with joint scores last, box scores (K,) -> instance scores (K,)."""
    joint = keypoints[..., 2]
    counted = joint > threshold
    mean = (joint * counted).sum(-1) / counted.sum(-1).clamp_min(1)
    return mean * box_scores.to(mean)


def oks_matrix(keypoints: Tensor, areas: Tensor, sigmas: Sequence[float] = OKS_SIGMAS) -> Tensor:
    """Poses (K, J, >=2) with x, y first and areas (K,) -> the symmetric OKS matrix (K, K), float64."""
    xy = keypoints[..., :2].double()
    areas = areas.double()
    variances = (2 * xy.new_tensor(sigmas)) ** 2
    d2 = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    mean_area = (areas[:, None] + areas[None]) / 2 + _EPS
    e = d2 / variances / mean_area[..., None] / 2
    return torch.exp(-e).mean(-1)


def oks_nms(
    keypoints: Tensor,
    scores: Tensor,
    areas: Tensor,
    threshold: float = OKS_THRESHOLD,
    sigmas: Sequence[float] = OKS_SIGMAS,
) -> Tensor:
    """Indices (int64, by descending score) of the poses (K, J, >=2) that OKS-NMS keeps."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    overlaps = oks_matrix(keypoints, areas, sigmas).cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i] > threshold
    return torch.tensor(keep, dtype=torch.int64)
