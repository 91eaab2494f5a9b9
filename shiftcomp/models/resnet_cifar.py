"""CIFAR ResNets of He et al. (2016), section 4.2: resnet20/32/44/56/110.

Depth ``6n + 2``: a 3x3 conv with 16 channels, three stages of ``n`` basic blocks with 16/32/64 channels
(stride 2 at the start of stages 2 and 3), global average pooling and a linear classifier. Shortcuts are
"option A" (parameter free): subsample by 2 and zero-pad the new channels, as in the paper and in the
implementation by Yerlan Idelbayev that DeepShift used. Input ``(N, 3, 32, 32)``; output ``(N, num_classes)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PadShortcut", "BasicBlockA", "CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56",
           "resnet110"]


class PadShortcut(nn.Module):
    """Option-A shortcut: ``x[:, :, ::2, ::2]`` zero-padded with ``pad`` channels on each side.

    Args:
        pad: number of zero channels added before and after the input channels (>= 0).
    """

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlockA(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU; option-A shortcut when the shape changes.

    Args:
        in_planes: input channels.
        planes: output channels (``2 * in_planes`` when ``stride == 2``).
        stride: 1 or 2.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_planes != planes:
            if stride != 2 or planes - in_planes != 2 * (planes // 4):
                raise ValueError("option-A shortcut needs stride 2 and planes == 2 * in_planes")
            self.shortcut: nn.Module = PadShortcut(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with ``n`` option-A basic blocks per stage (depth ``6n + 2``).

    Args:
        n: blocks per stage (>= 1).
        num_classes: number of output logits.
    """

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        layers = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlockA(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 (0.27 M parameters)."""
    return CifarResNet(3, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 (0.46 M parameters)."""
    return CifarResNet(5, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 (0.66 M parameters)."""
    return CifarResNet(7, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 (0.85 M parameters)."""
    return CifarResNet(9, num_classes)


def resnet110(num_classes: int = 10) -> CifarResNet:
    """ResNet-110 (1.7 M parameters)."""
    return CifarResNet(18, num_classes)
