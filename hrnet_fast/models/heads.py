"""The official heads, registered by name: ``HRNet(arch, head=NAME, **options)`` builds one.

A head (a :class:`Head` subclass decorated with :func:`register_head`) says how the backbone's last
module fuses (``keeps_all_outputs``) and upsamples by default, adds its modules to the model under
the official attribute names (so state_dict keys match the official checkpoints) and computes the
output from the stage-4 branches. Its constructor takes the head's own keywords.

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

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import upsample_concat
from .blocks import Bottleneck, make_layer


class Head:
    """One head of ``HRNet``: fusion defaults, :meth:`build` (adds the head's modules to the model,
    whose ``widths`` are the stage-4 channels), :meth:`forward` (stage-4 branches -> output)."""

    name: ClassVar[str]
    default_upsample: ClassVar[str] = "nearest"
    keeps_all_outputs: ClassVar[bool] = True  # False: the last module fuses into branch 0 only

    def build(self, model: nn.Module) -> None:
        """Add the head's modules to ``model`` (nothing for a head without parameters)."""

    def forward(self, model: nn.Module, features: list[Tensor]):
        raise NotImplementedError


HEADS: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    """Make ``cls`` available as ``HRNet(..., head=cls.name)``."""
    if cls.name in HEADS:
        raise ValueError(f"head {cls.name!r} is registered twice")
    HEADS[cls.name] = cls
    return cls


def create_head(name: str, **options) -> Head:
    """The head ``name`` with its keywords (a TypeError names a keyword it does not take)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
    try:
        return HEADS[name](**options)
    except TypeError as exc:
        raise TypeError(f"head {name!r}: {exc}") from None


@register_head
class PoseHead(Head):
    name = "pose"
    keeps_all_outputs = False

    def __init__(self, num_joints: int = 17):
        self.num_joints = num_joints

    def build(self, model):
        model.num_joints = self.num_joints
        model.final_layer = nn.Conv2d(model.widths[0], self.num_joints, kernel_size=1, stride=1, padding=0)

    def forward(self, model, features):
        """-> heatmaps (N, num_joints, H/4, W/4)."""
        return model.final_layer(features[0])


@register_head
class SegHead(Head):
    name = "seg"
    default_upsample = "bilinear"

    def __init__(self, num_classes: int = 19):
        self.num_classes = num_classes

    def build(self, model):
        model.num_classes = self.num_classes
        c = sum(model.widths)
        model.last_layer = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, self.num_classes, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, model, features):
        """-> class logits (N, num_classes, H/4, W/4)."""
        feats = upsample_concat(features, mode="bilinear", align_corners=model.align_corners, backend=model.backend)
        return model.last_layer(feats)


@register_head
class ClsHead(Head):
    name = "cls"
    head_channels = (32, 64, 128, 256)

    def __init__(self, num_classes: int = 1000):
        self.num_classes = num_classes

    def build(self, model):
        model.num_classes = self.num_classes
        hc, e = self.head_channels, Bottleneck.expansion
        model.incre_modules = nn.ModuleList(
            make_layer("bottleneck", c, h, 1) for c, h in zip(model.widths, hc, strict=True)
        )
        model.downsamp_modules = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(hc[i] * e, hc[i + 1] * e, 3, 2, 1),
                nn.BatchNorm2d(hc[i + 1] * e),
                nn.ReLU(inplace=True),
            )
            for i in range(len(hc) - 1)
        )
        model.final_layer = nn.Sequential(
            nn.Conv2d(hc[-1] * e, 2048, 1, 1, 0), nn.BatchNorm2d(2048), nn.ReLU(inplace=True)
        )
        model.classifier = nn.Linear(2048, self.num_classes)

    def forward(self, model, features):
        """-> class logits (N, num_classes)."""
        y = model.incre_modules[0](features[0])
        for i, down in enumerate(model.downsamp_modules):
            y = model.incre_modules[i + 1](features[i + 1]) + down(y)
        y = model.final_layer(y)
        return model.classifier(y.flatten(2).mean(2))


@register_head
class FeaturesHead(Head):
    name = "features"

    def forward(self, model, features):
        """-> the four branch outputs, highest resolution first."""
        return tuple(features)


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


@register_head
class V2pHead(Head):
    name = "v2p"

    def __init__(self, out_channels: int = 256):
        self.out_channels = out_channels

    def build(self, model):
        model.neck = HRFPN(sum(model.widths), self.out_channels, align_corners=model.align_corners)

    def forward(self, model, features):
        """-> 5 maps (N, out_channels, .) at strides 4, 8, 16, 32, 64."""
        return model.neck(features, backend=model.backend)
