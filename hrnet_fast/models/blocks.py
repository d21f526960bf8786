"""Residual blocks of HRNet, with the official attribute names (conv1, bn1, ..., downsample).

BasicBlock:  y = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x)),            C -> C
Bottleneck:  y = ReLU(BN(conv1x1(ReLU(BN(conv3x3(ReLU(BN(conv1x1(x)))))))) + shortcut(x)),
             inplanes -> 4 * planes
The shortcut is the identity, or ``downsample`` (1x1 conv + BN) when the shape changes.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def projection(in_planes: int, out_planes: int, stride: int = 1) -> nn.Sequential:
    """The 1x1 conv + BN shortcut (official ``downsample``)."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_layer(block: str, inplanes: int, planes: int, num_blocks: int, stride: int = 1) -> nn.Sequential:
    """``num_blocks`` blocks, ``inplanes`` -> ``planes * expansion`` channels (official ``_make_layer``)."""
    cls = BLOCKS[block]
    out_planes = planes * cls.expansion
    downsample = projection(inplanes, out_planes, stride) if stride != 1 or inplanes != out_planes else None
    layers = [cls(inplanes, planes, stride, downsample)]
    layers += [cls(out_planes, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)
