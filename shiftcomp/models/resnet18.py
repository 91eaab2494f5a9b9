"""ResNet-18 adapted to 32x32 inputs (CIFAR variant): 3x3 stem with stride 1 and no max-pool.

Four stages of two basic blocks (64/128/256/512 channels, stride 2 at stages 2-4), projection shortcuts
(1x1 conv + BN) where the shape changes, global average pooling, linear classifier.
Input ``(N, 3, 32, 32)`` (any size >= 8 works); output ``(N, num_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlockB", "ResNet18Cifar", "resnet18"]


class BasicBlockB(nn.Module):
    """Basic block with a projection (1x1 conv + BN) shortcut when stride or width changes.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first conv (1 or 2).
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
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18, CIFAR variant (11.2 M parameters).

    Args:
        num_classes: number of output logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        in_planes = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlockB(in_planes, planes, stride), BasicBlockB(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18(num_classes: int = 10) -> ResNet18Cifar:
    """ResNet-18, CIFAR variant."""
    return ResNet18Cifar(num_classes)
