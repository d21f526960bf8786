"""``MultiResolutionFusion``: HRNet's fusion step, holding the official ``fuse_layers`` parameters.

For branches x_0 (highest resolution) ... x_{n-1} with channels c_0 ... c_{n-1}, output i is

    out_i = ReLU( x_i
                + sum_{j<i} Down_{j->i}(x_j)                       # (i-j) stride-2 3x3 conv + BN,
                                                                   # ReLU after all but the last
                + sum_{j>i} Up_{size(x_i)}( BN(Conv1x1(x_j)) ) )   # project to c_i, then upsample

The module *is* the official ``fuse_layers`` ModuleList: ``self[i][j]`` is ``fuse_layers[i][j]``
(None for j == i), so state_dict keys read ``...fuse_layers.i.j.0.weight`` exactly as in the
official pose, classification and segmentation repos (their ``nn.Upsample`` holds no parameters).
The sum, the upsampling and the ReLU go through :func:`hrnet_fast.ops.upsample_sum`, which a fused
backend runs as one kernel per output branch (level 1). In inference, on a backend with a
``fusion_branch`` kernel for the maps, the whole step runs with BN folded, one launch per output
branch that also computes the projections and the last stride-2 convs (level 2,
:mod:`.folded_fusion`). The backend is resolved once per call and passed down to the ops.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..ops import resolve_backend, upsample_sum
from ..ops.checks import check_mode
from ..ops.registry import validate_backend
from .folded_fusion import folded_forward, use_level2


def _project(c_in: int, c_out: int) -> nn.Sequential:
    """Lower-resolution path j > i: 1x1 conv + BN (upsampling is done by the op)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False), nn.BatchNorm2d(c_out))


def _downsample(c_in: int, c_out: int, steps: int) -> nn.Sequential:
    """Higher-resolution path j < i: ``steps`` stride-2 3x3 convs; the last maps to c_out, no ReLU."""
    convs = []
    for k in range(steps):
        last = k == steps - 1
        layers = [
            nn.Conv2d(c_in, c_out if last else c_in, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c_out if last else c_in),
        ]
        if not last:
            layers.append(nn.ReLU(inplace=True))
        convs.append(nn.Sequential(*layers))
    return nn.Sequential(*convs)


class MultiResolutionFusion(nn.ModuleList):
    """Fuse ``len(channels)`` branches into ``num_outputs`` outputs (the first ones: highest resolution).

    Args:
        channels: channels of each input branch, highest resolution first.
        num_outputs: how many outputs to produce (all branches by default; 1 for the last module of
            the official pose network, which keeps only the high-resolution output).
        upsample: ``"nearest"`` (official pose and classification) or ``"bilinear"`` (segmentation,
            and the paper).
        align_corners: for bilinear upsampling, as in ``F.interpolate``.
        backend: backend for the fused op; None follows :func:`hrnet_fast.set_backend`.

    forward(xs): list of n tensors (N, c_j, H_j, W_j) -> list of ``num_outputs`` tensors (N, c_i, H_i, W_i).
    """

    def __init__(
        self,
        channels: Sequence[int],
        num_outputs: int | None = None,
        *,
        upsample: str = "nearest",
        align_corners: bool = False,
        backend: str | None = None,
    ):
        channels = tuple(int(c) for c in channels)
        n = len(channels)
        num_outputs = n if num_outputs is None else int(num_outputs)
        if n < 2:
            raise ValueError(f"fusion needs at least two branches, got channels={channels}")
        if not 1 <= num_outputs <= n:
            raise ValueError(f"num_outputs must be in 1..{n}, got {num_outputs}")
        check_mode(upsample, align_corners)
        rows = []
        for i in range(num_outputs):
            row = []
            for j in range(n):
                if j > i:
                    row.append(_project(channels[j], channels[i]))
                elif j == i:
                    row.append(None)
                else:
                    row.append(_downsample(channels[j], channels[i], i - j))
            rows.append(nn.ModuleList(row))
        super().__init__(rows)
        self.channels = channels
        self.upsample = upsample
        self.align_corners = align_corners
        self.backend = validate_backend(backend)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:  # type: ignore[override]
        n = len(self.channels)
        if len(xs) != n:
            raise ValueError(f"MultiResolutionFusion expects {n} branches, got {len(xs)}")
        for j, (x, c) in enumerate(zip(xs, self.channels, strict=True)):
            if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != c:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"MultiResolutionFusion: branch {j} must be (N, {c}, H, W), got {got}")
        backend = resolve_backend(self.backend, xs[0].device)
        if use_level2(self, xs, backend):
            return folded_forward(self, xs, backend)
        outs = []
        for i, row in enumerate(self):
            same = [row[j](xs[j]) for j in range(i)]
            low = [row[j](xs[j]) for j in range(i + 1, n)]
            outs.append(
                upsample_sum(
                    xs[i],
                    same,
                    low,
                    mode=self.upsample,
                    align_corners=self.align_corners,
                    backend=backend,
                )
            )
        return outs

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, upsample={self.upsample!r}, "
            f"align_corners={self.align_corners}, backend={self.backend!r}"
        )
