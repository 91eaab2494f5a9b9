"""ImageNet ResNet-18/34/50 (He et al. 2016) with ``state_dict`` names equal to torchvision's, so torchvision
checkpoints and DeepShift ``imagenet.py`` runs (which use torchvision's models) load as they are.

Stem: 7x7/2 conv (64) - BN - ReLU - 3x3/2 max-pool; four stages (64/128/256/512 planes, stride 2 from stage 2),
basic blocks (18/34) or bottlenecks with the stride on the 3x3 conv (50, torchvision's "v1.5"); projection
shortcuts (``downsample`` = 1x1 conv + BN) where the shape changes; global average pooling; ``fc``.
Submodules are registered in torchvision's order (DeepShift's ``--shift-depth`` counts along it).
Input ``(N, 3, 224, 224)`` (any size >= 32 works); output ``(N, num_classes)``.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNetImageNet", "resnet18_imagenet", "resnet34_imagenet",
           "resnet50_imagenet"]


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample = _downsample(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    """1x1 (reduce) - 3x3 (stride) - 1x1 (expand x4) with BN, plus the shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.downsample = _downsample(in_planes, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(y + identity)


class ResNetImageNet(nn.Module):
    """ImageNet ResNet.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        blocks: blocks per stage (4 numbers).
        num_classes: number of output logits (default 1000).
    """

    def __init__(self, block: type, blocks: tuple[int, int, int, int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_planes = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layers = []
            for j in range(n):
                layers.append(block(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18_imagenet(num_classes: int = 1000) -> ResNetImageNet:
    """ResNet-18 for 224x224 inputs (11.7 M parameters at 1000 classes)."""
    return ResNetImageNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet34_imagenet(num_classes: int = 1000) -> ResNetImageNet:
    """ResNet-34 for 224x224 inputs (21.8 M parameters at 1000 classes)."""
    return ResNetImageNet(BasicBlock, (3, 4, 6, 3), num_classes)


def resnet50_imagenet(num_classes: int = 1000) -> ResNetImageNet:
    """ResNet-50 for 224x224 inputs (25.6 M parameters at 1000 classes)."""
    return ResNetImageNet(Bottleneck, (3, 4, 6, 3), num_classes)
