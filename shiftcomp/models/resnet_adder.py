"""AdderNet and ShiftAddNet ResNet-20 for CIFAR: :func:`resnet20` converted with an ``AdderConfig`` or a
``ShiftAddConfig``, keeping the first convolution and the classifier float (as both papers do)."""
from __future__ import annotations

from torch import nn

from .resnet_cifar import resnet20

__all__ = ["resnet20_adder", "resnet20_shiftadd", "keep_stem_and_head"]


def keep_stem_and_head(module: nn.Module, fqn: str) -> bool:  # noqa: ARG001 - filter_fn signature
    """``filter_fn`` that converts every layer but the stem conv ``conv1`` and the classifier ``fc``."""
    return fqn not in ("conv1", "fc")


def resnet20_adder(num_classes: int = 10, config=None) -> nn.Module:
    """AdderNet ResNet-20: every block conv is a :class:`~shiftcomp.nn.Conv2dAdder`.

    Args:
        num_classes: logits.
        config: :class:`~shiftcomp.AdderConfig` (default: float ``AdderConfig()``).
    """
    from shiftcomp import AdderConfig, convert

    return convert(resnet20(num_classes), config or AdderConfig(), filter_fn=keep_stem_and_head)


def resnet20_shiftadd(num_classes: int = 10, config=None) -> nn.Module:
    """ShiftAddNet ResNet-20: every block conv is a shift conv followed by an adder conv.

    Args:
        num_classes: logits.
        config: :class:`~shiftcomp.ShiftAddConfig` (default: ``ShiftAddConfig()``, Q shifts, float adders).
    """
    from shiftcomp import ShiftAddConfig, convert

    return convert(resnet20(num_classes), config or ShiftAddConfig(), filter_fn=keep_stem_and_head)
