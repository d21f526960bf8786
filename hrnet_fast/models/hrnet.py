"""The HRNet backbone: stem, ``layer1``, transitions and HighResolutionModules, named as officially.

Attribute names reproduce the official state_dict keys (``conv1``, ``bn1``, ``conv2``, ``bn2``,
``layer1``, ``transition1``, ``stage2``, ..., ``stage4``; inside a module ``branches`` and
``fuse_layers``), so checkpoints of the official repos load with ``strict=True``.

Shapes for an input (N, 3, H, W): the stem brings it to 1/4 resolution (two stride-2 convs, each
rounding up); every new branch halves the previous one (again rounding up), so branch k has size
ceil(H / 2^(k+2)) x ceil(W / 2^(k+2)) and C * 2^k channels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import FoldedConv, MultiResolutionFusion
from ..nn.checkpointing import checkpointed
from ..ops.checks import check_mode
from ..ops.registry import validate_backend
from .blocks import BLOCKS, make_layer
from .configs import ArchSpec, StageSpec, get_arch
from .heads import create_head


class HighResolutionModule(nn.Module):
    """One HRNet module: a run of residual blocks per branch, then the multi-resolution fusion.

    forward(xs): list of branch tensors (N, c_j, H_j, W_j) -> list of fused outputs (all branches,
    or only the highest-resolution one when ``multi_scale_output`` is False).
    """

    def __init__(
        self,
        spec: StageSpec,
        in_channels: Sequence[int],
        multi_scale_output: bool = True,
        *,
        upsample: str = "nearest",
        align_corners: bool = False,
        backend: str | None = None,
    ):
        super().__init__()
        expansion = BLOCKS[spec.block].expansion
        self.branches = nn.ModuleList(
            make_layer(spec.block, c_in, c, n)
            for c_in, c, n in zip(in_channels, spec.num_channels, spec.num_blocks, strict=True)
        )
        self.out_channels = tuple(c * expansion for c in spec.num_channels)
        self.fuse_layers = (
            MultiResolutionFusion(
                self.out_channels,
                None if multi_scale_output else 1,
                upsample=upsample,
                align_corners=align_corners,
                backend=backend,
            )
            if spec.num_branches > 1
            else None
        )

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        return xs if self.fuse_layers is None else self.fuse_layers(xs)


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def make_transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Official ``_make_transition_layer``: adapt existing branches (3x3 conv where the width changes,
    else None) and grow new ones from the lowest-resolution branch with stride-2 3x3 convs."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(_conv_bn_relu(pre[i], c, 1) if c != pre[i] else None)
        else:
            steps = i + 1 - len(pre)
            layers.append(
                nn.Sequential(*(_conv_bn_relu(pre[-1], c if k == steps - 1 else pre[-1], 2) for k in range(steps)))
            )
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNet with one of the official heads: ``HRNet(arch, head=..., ...)``.

    Args:
        arch: w18_small_v1, w18_small_v2, w18, w30, w32, w40, w44, w48 or w64.
        head: ``"pose"`` (HRNetV1 keypoint heatmaps at 1/4 resolution, the default), ``"seg"``
            (HRNetV2 segmentation logits at 1/4 resolution), ``"cls"`` (ImageNet classifier),
            ``"features"`` (the four branch outputs) or ``"v2p"`` (HRNetV2p pyramid for detectors).
        upsample: fusion upsampling, ``"nearest"`` or ``"bilinear"``; None: the head's official
            choice (nearest for pose, cls, features and v2p; bilinear for seg).
        align_corners: for bilinear upsampling; None: the official choice (False).
        backend: backend for the fused ops (see :func:`hrnet_fast.set_backend`); None follows the
            global choice. Settable later through ``model.backend = ...``.
        checkpoint_stages: in training, keep only each stage's inputs for backward and recompute the
            rest (activation checkpointing per stage; BatchNorm statistics are updated once).
        Head-specific keywords: ``num_joints`` (pose, 17), ``num_classes`` (seg 19, cls 1000),
        ``out_channels`` (v2p, 256).

    ``model.head`` is the head's name; the head's modules are attributes of the model under their
    official names (``final_layer``, ``last_layer``, ``incre_modules``, ``neck``, ...). Heads are
    registered in :mod:`hrnet_fast.models.heads` (``HEADS``).
    """

    def __init__(
        self,
        arch: str | ArchSpec = "w32",
        head: str = "pose",
        *,
        upsample: str | None = None,
        align_corners: bool | None = None,
        backend: str | None = None,
        checkpoint_stages: bool = False,
        **head_options,
    ):
        super().__init__()
        self._head = create_head(head, **head_options)
        self.head = head
        self.arch = get_arch(arch)
        self.upsample = self._head.default_upsample if upsample is None else upsample
        self.align_corners = False if align_corners is None else align_corners
        check_mode(self.upsample, self.align_corners)
        backend = validate_backend(backend)
        fuse = {"upsample": self.upsample, "align_corners": self.align_corners, "backend": backend}

        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)

        s1 = self.arch.stage1
        self.layer1 = make_layer(s1.block, 64, s1.num_channels[0], s1.num_blocks[0])
        channels: tuple[int, ...] = (s1.num_channels[0] * BLOCKS[s1.block].expansion,)
        for k, spec in enumerate((self.arch.stage2, self.arch.stage3, self.arch.stage4), start=1):
            cur = tuple(c * BLOCKS[spec.block].expansion for c in spec.num_channels)
            setattr(self, f"transition{k}", make_transition(channels, cur))
            modules = []
            for m in range(spec.num_modules):
                last = k == 3 and m == spec.num_modules - 1
                modules.append(HighResolutionModule(spec, cur, not last or self._head.keeps_all_outputs, **fuse))
                cur = modules[-1].out_channels
            setattr(self, f"stage{k + 1}", nn.Sequential(*modules))
            channels = cur
        self.widths = channels
        self._backend = backend
        self.checkpoint_stages = checkpoint_stages
        self._head.build(self)

    @property
    def backend(self) -> str | None:
        """Backend of every fused op in the model; None follows :func:`hrnet_fast.set_backend`."""
        return self._backend

    @backend.setter
    def backend(self, name: str | None) -> None:
        name = validate_backend(name)
        self._backend = name
        for m in self.modules():
            if isinstance(m, (MultiResolutionFusion, FoldedConv)):
                m.backend = name

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"HRNet expects a tensor of images (N, 3, H, W), got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"HRNet expects images of shape (N, 3, H, W), got {tuple(x.shape)}")
        w = self.conv1.weight
        if x.dtype != w.dtype and not (x.is_floating_point() and torch.is_autocast_enabled(x.device.type)):
            raise TypeError(f"input is {x.dtype} but the model's weights are {w.dtype}; cast one to the other")
        if x.device != w.device:
            raise ValueError(f"input is on {x.device} but the model is on {w.device}")

    def _stage1(self, x: Tensor) -> list[Tensor]:
        """The stem and ``layer1``: images -> [the 1/4-resolution branch]."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return [self.layer1(x)]

    def _stage(self, k: int, xs: list[Tensor]) -> list[Tensor]:
        """``transition{k}`` then ``stage{k+1}`` (k = 1, 2, 3)."""
        transition = getattr(self, f"transition{k}")
        xs = [xs[min(i, len(xs) - 1)] if t is None else t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)]
        return getattr(self, f"stage{k + 1}")(xs)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Images (N, 3, H, W) -> the stage-4 branch outputs, highest resolution first."""
        self._check_input(x)
        checkpoint = self.checkpoint_stages and self.training and torch.is_grad_enabled()
        run = functools.partial(checkpointed, owner=self) if checkpoint else lambda fn, *args: fn(*args)
        xs = run(self._stage1, x)
        for k in (1, 2, 3):
            xs = run(self._stage, k, xs)
        return xs

    def forward(self, x: Tensor):
        """Images (N, 3, H, W) -> the head's output (see :mod:`hrnet_fast.models.heads`)."""
        return self._head.forward(self, self.forward_features(x))

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch.name!r}, head={self.head!r}, "
            f"upsample={self.upsample!r}, align_corners={self.align_corners}"
        )
