"""The official heads, each an ``HRNet`` subclass whose attribute names give the official keys.

pose      HRNetV1 (deep-high-resolution-net.pytorch): ``final_layer`` 1x1 conv C -> num_joints on the
          highest-resolution branch; the last module of stage 4 fuses into that branch only.
          Output (N, num_joints, H/4, W/4).
seg       HRNetV2 (HRNet-Semantic-Segmentation): all branches to the highest resolution,
          concatenated (15C channels), ``last_layer`` = 1x1 conv + BN + ReLU + 1x1 conv to
          num_classes. Output (N, num_classes, H/4, W/4).
cls       ImageNet classifier (HRNet-Image-Classification): ``incre_modules`` (one Bottleneck per
          branch to 128/256/512/1024 channels), ``downsamp_modules`` (stride-2 3x3 convs merging
          high into low resolution), ``final_layer`` (1x1 to 2048), global average, ``classifier``.
          Output (N, num_classes).
features  The four stage-4 branch outputs, a tuple of (N, C*2^k, H/2^(k+2), W/2^(k+2)).
v2p       HRNetV2p (HRNet-Object-Detection's HRFPN as ``neck``): concatenate at the highest
          resolution, ``reduction_conv`` 1x1 to out_channels, average-pool to 5 levels, a 3x3
          ``fpn_conv`` per level. Output a tuple of 5 maps at strides 4, 8, 16, 32, 64.
(H/4 means ceil(ceil(H/2)/2): sizes that do not divide are rounded up, never rejected.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import upsample_concat
from .blocks import Bottleneck, make_layer
from .hrnet import HRNet


class PoseHRNet(HRNet, head="pose"):
    keeps_all_outputs = False

    def __init__(self, arch="w32", head=None, *, num_joints: int = 17, **kwargs):
        super().__init__(arch, head, **kwargs)
        self.num_joints = num_joints
        self.final_layer = nn.Conv2d(self.widths[0], num_joints, kernel_size=1, stride=1, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) -> heatmaps (N, num_joints, H/4, W/4)."""
        return self.final_layer(self.forward_features(x)[0])


class SegHRNet(HRNet, head="seg"):
    default_upsample = "bilinear"

    def __init__(self, arch="w32", head=None, *, num_classes: int = 19, **kwargs):
        super().__init__(arch, head, **kwargs)
        self.num_classes = num_classes
        c = sum(self.widths)
        self.last_layer = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, num_classes, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) -> class logits (N, num_classes, H/4, W/4)."""
        feats = upsample_concat(
            self.forward_features(x), mode="bilinear", align_corners=self.align_corners, backend=self.backend
        )
        return self.last_layer(feats)


class ClsHRNet(HRNet, head="cls"):
    head_channels = (32, 64, 128, 256)

    def __init__(self, arch="w32", head=None, *, num_classes: int = 1000, **kwargs):
        super().__init__(arch, head, **kwargs)
        self.num_classes = num_classes
        hc = self.head_channels
        e = Bottleneck.expansion
        self.incre_modules = nn.ModuleList(
            make_layer("bottleneck", c, h, 1) for c, h in zip(self.widths, hc, strict=True)
        )
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(hc[i] * e, hc[i + 1] * e, 3, 2, 1),
                nn.BatchNorm2d(hc[i + 1] * e),
                nn.ReLU(inplace=True),
            )
            for i in range(len(hc) - 1)
        )
        self.final_layer = nn.Sequential(
            nn.Conv2d(hc[-1] * e, 2048, 1, 1, 0), nn.BatchNorm2d(2048), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Linear(2048, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) -> class logits (N, num_classes)."""
        xs = self.forward_features(x)
        y = self.incre_modules[0](xs[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](xs[i + 1]) + down(y)
        y = self.final_layer(y)
        return self.classifier(y.flatten(2).mean(2))


class FeaturesHRNet(HRNet, head="features"):
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Images (N, 3, H, W) -> the four branch outputs, highest resolution first."""
        return tuple(self.forward_features(x))


class HRFPN(nn.Module):
    """HRNetV2p neck: concat at the highest resolution, 1x1 reduction, pooled pyramid, 3x3 per level."""

    def __init__(self, in_channels: int, out_channels: int = 256, num_outs: int = 5, *, align_corners: bool = False):
        super().__init__()
        self.reduction_conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1))
        self.fpn_conv = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(num_outs))
        self.align_corners = align_corners

    def forward(self, xs: list[Tensor], backend: str | None = None) -> tuple[Tensor, ...]:
        out = self.reduction_conv(
            upsample_concat(xs, mode="bilinear", align_corners=self.align_corners, backend=backend)
        )
        reach = 2 ** (len(self.fpn_conv) - 1)
        if min(out.shape[-2:]) < reach:
            raise ValueError(
                f"the v2p pyramid pools the 1/4-resolution map by up to {reach}, so it must be at least "
                f"{reach}x{reach} (an input of at least {4 * reach}x{4 * reach}); got {tuple(out.shape[-2:])}"
            )
        levels = [out] + [F.avg_pool2d(out, kernel_size=2**i, stride=2**i) for i in range(1, len(self.fpn_conv))]
        return tuple(conv(level) for conv, level in zip(self.fpn_conv, levels, strict=True))


class V2pHRNet(HRNet, head="v2p"):
    def __init__(self, arch="w32", head=None, *, out_channels: int = 256, **kwargs):
        super().__init__(arch, head, **kwargs)
        self.neck = HRFPN(sum(self.widths), out_channels, align_corners=self.align_corners)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Images (N, 3, H, W) -> 5 maps (N, out_channels, .) at strides 4, 8, 16, 32, 64."""
        return self.neck(self.forward_features(x), backend=self.backend)
