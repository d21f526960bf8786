"""Flip test: average the heatmaps of an input and of its mirror image, mirrored back.

    H = ( f(x) + shift( swap( mirror( f(mirror(x)) ) ) ) ) / 2

``mirror`` reverses the width axis, ``swap`` exchanges the channels of each left/right joint pair,
and ``shift`` moves the mirrored heatmaps one pixel to the right (``out[..., 1:] = in[..., :-1]``,
the first column kept), because a stride-4 heatmap pixel is not centred on the input pixels it
sees; the official code does this ("SHIFT_HEATMAP") for its published numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def swap_permutation(num_joints: int, flip_pairs: Sequence[tuple[int, int]]) -> list[int]:
    """perm[j] = the joint that j becomes in the mirror image (itself for joints without a pair)."""
    perm = list(range(num_joints))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def flip_back(heatmaps: Tensor, flip_pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Heatmaps (N, J, H, W) of a mirrored input -> mirrored back, left/right joints swapped."""
    return heatmaps.flip(-1)[:, swap_permutation(heatmaps.shape[1], flip_pairs)]


def shift_right(heatmaps: Tensor) -> Tensor:
    """The official one-pixel shift along the width: out[..., 1:] = in[..., :-1], column 0 kept."""
    return torch.cat((heatmaps[..., :1], heatmaps[..., :-1]), dim=-1)


def flip_test(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    flip_pairs: Sequence[tuple[int, int]],
    shift: bool = True,
) -> Tensor:
    """Inputs (N, 3, h, w) -> flip-tested heatmaps (N, J, h/4, w/4), from one forward on 2N images."""
    both = model(torch.cat((inputs, inputs.flip(-1))))
    plain, mirrored = both[: inputs.shape[0]], flip_back(both[inputs.shape[0] :], flip_pairs)
    if shift:
        mirrored = shift_right(mirrored)
    return (plain + mirrored) * 0.5
