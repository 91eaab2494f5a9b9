"""Small MNIST models, shaped like DeepShift's ``mnist.py --type linear|conv``.

Both take ``(N, 1, 28, 28)`` float images (normalised with mean 0.1307, std 0.3081) and return
``(N, num_classes)`` logits (not log-probabilities: the training loop uses ``cross_entropy``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SimpleLinear", "SimpleConv", "SimpleConvBN"]


class SimpleLinear(nn.Module):
    """MLP 784-512-512-10 with ReLU and dropout 0.2 after each hidden layer (DeepShift ``--type linear``).

    Args:
        num_classes: number of output logits (default 10).
        dropout: dropout probability after each hidden layer, in [0, 1) (default 0.2).
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.2) -> None:
        super().__init__()
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(28 * 28, 512)
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(512, 512)
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        x = self.dropout1(self.relu1(self.fc1(x)))
        x = self.dropout2(self.relu2(self.fc2(x)))
        return self.fc3(x)


class SimpleConv(nn.Module):
    """LeNet-style conv net (DeepShift ``--type conv``): conv5x5(20) -> pool -> conv5x5(50) -> pool -> fc500 -> fc.

    Args:
        num_classes: number of output logits (default 10).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        return self.fc2(x)


class SimpleConvBN(SimpleConv):
    """:class:`SimpleConv` with BatchNorm after ``conv1``, ``conv2`` and ``fc1``.

    Adder layers (AdderNet) output ``-Σ|x - w| <= 0``: without a normalisation before the ReLU almost every
    unit is dead, so AdderNet and ShiftAddNet always put BatchNorm after their adder layers. Comparisons
    of shift, adder and float layers use this model for every row.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.bn1 = nn.BatchNorm2d(20)
        self.bn2 = nn.BatchNorm2d(50)
        self.bn3 = nn.BatchNorm1d(500)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.flatten(x)
        x = self.relu3(self.bn3(self.fc1(x)))
        return self.fc2(x)

