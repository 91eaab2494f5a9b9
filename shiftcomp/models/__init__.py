"""Model zoo for the experiments: MNIST (simple linear / simple conv), CIFAR (ResNets, MobileNetV2) and ImageNet
ResNet-18/34/50 (torchvision state_dict names: ``resnet18_imagenet``, ...; ``resnet18`` is the CIFAR variant).

All models are plain ``nn.Module`` s built from ops the compiler handles (Conv2d, Linear, BatchNorm2d,
ReLU/ReLU6, pooling, residual add, flatten, pad/slice shortcut, dropout), are ``torch.fx`` traceable,
and return logits.

    >>> from shiftcomp.models import get_model
    >>> model = get_model("resnet20", num_classes=10)
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .mnist import SimpleConv, SimpleConvBN, SimpleLinear
from .mobilenetv2 import MobileNetV2Cifar, mobilenetv2
from .resnet18 import ResNet18Cifar, resnet18
from .resnet_adder import resnet20_adder, resnet20_shiftadd
from .resnet_cifar import CifarResNet, resnet20, resnet32, resnet44, resnet56, resnet110
from .resnet_imagenet import ResNetImageNet, resnet18_imagenet, resnet34_imagenet, resnet50_imagenet

__all__ = ["MODELS", "INPUT_SHAPES", "get_model", "SimpleLinear", "SimpleConv", "SimpleConvBN", "CifarResNet", "ResNet18Cifar",
           "MobileNetV2Cifar", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18",
           "mobilenetv2", "resnet20_adder", "resnet20_shiftadd",
           "ResNetImageNet", "resnet18_imagenet", "resnet34_imagenet", "resnet50_imagenet"]

#: name -> constructor taking ``num_classes``.
MODELS: dict[str, Callable[[int], nn.Module]] = {
    "simple_linear": lambda num_classes=10: SimpleLinear(num_classes),
    "simple_conv": lambda num_classes=10: SimpleConv(num_classes),
    "simple_conv_bn": lambda num_classes=10: SimpleConvBN(num_classes),
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet18": resnet18,
    "mobilenetv2": mobilenetv2,
    "resnet20_adder": resnet20_adder,
    "resnet20_shiftadd": resnet20_shiftadd,
    # ImageNet ResNets, torchvision's state_dict names (``resnet18`` above is the CIFAR variant)
    "resnet18_imagenet": resnet18_imagenet,
    "resnet34_imagenet": resnet34_imagenet,
    "resnet50_imagenet": resnet50_imagenet,
}

#: name -> per-sample input shape ``(C, H, W)`` the model expects.
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    name: ((1, 28, 28) if name.startswith("simple_") else (3, 224, 224) if name.endswith("_imagenet")
           else (3, 32, 32)) for name in MODELS
}


def get_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build a freshly initialised model from the zoo.

    Args:
        name: a key of :data:`MODELS` (``simple_linear``, ``simple_conv``, ``resnet20`` ... ``mobilenetv2``).
        num_classes: number of output logits (>= 1).

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    try:
        ctor = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
    return ctor(num_classes)
