"""MobileNetV2 (Sandler et al. 2018) adapted to 32x32 inputs (CIFAR variant).

Changes from the ImageNet network: the stem conv and the second bottleneck stage use stride 1 (total
downsampling 8 instead of 32), so a 32x32 input reaches the head at 4x4. Activations are ReLU6 as in the
paper. Input ``(N, 3, 32, 32)``; output ``(N, num_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InvertedResidual", "MobileNetV2Cifar", "mobilenetv2"]

# (expansion t, output channels c, repeats n, first stride s); stage 2 stride 1 for CIFAR.
_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
        (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> project 1x1 (linear), with an identity residual when shapes allow.

    Args:
        in_planes: input channels.
        out_planes: output channels.
        expansion: hidden width factor t (>= 1; t == 1 skips the expand conv).
        stride: depthwise stride (1 or 2).
    """

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_planes * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_planes, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_planes == out_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.use_residual:  # fixed at construction: not data dependent, fx-traceable
            out = out + x
        return out


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 width 1.0, CIFAR variant (2.2 M parameters).

    Args:
        num_classes: number of output logits.
        dropout: dropout before the classifier, in [0, 1) (default 0.0).
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        blocks = []
        in_planes = 32
        for t, c, n, s in _CFG:
            for i in range(n):
                blocks.append(InvertedResidual(in_planes, c, t, s if i == 0 else 1))
                in_planes = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(in_planes, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.features(self.stem(x)))
        return self.fc(self.dropout(self.flatten(self.avgpool(x))))


def mobilenetv2(num_classes: int = 10) -> MobileNetV2Cifar:
    """MobileNetV2, CIFAR variant."""
    return MobileNetV2Cifar(num_classes)
