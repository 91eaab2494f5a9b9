"""The ``nn.Conv2d`` geometry that shift and adder conv layers share: taking it from a float conv, and printing it."""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["conv2d_init_kwargs", "conv2d_geometry_repr"]


def conv2d_init_kwargs(module: nn.Module, layer_name: str) -> dict[str, Any]:
    """Constructor arguments of a conv layer with ``module``'s geometry, bias flag, device and dtype.

    Raises ``TypeError`` unless ``module`` is an ``nn.Conv2d`` and ``ValueError`` for ``padding_mode != 'zeros'``
    (``layer_name`` names the layer class in both messages).
    """
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"{layer_name}.from_float needs an nn.Conv2d, got {type(module).__name__}")
    if module.padding_mode != "zeros":
        raise ValueError(f"{layer_name} supports only padding_mode='zeros', the nn.Conv2d has "
                         f"padding_mode={module.padding_mode!r}")
    w = module.weight
    return dict(in_channels=module.in_channels, out_channels=module.out_channels, kernel_size=module.kernel_size,
                stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups,
                bias=module.bias is not None, device=w.device, dtype=w.dtype)


def conv2d_geometry_repr(layer: Any) -> str:
    """``"C, O, kernel_size=..., stride=..."`` plus padding, dilation and groups when not the defaults."""
    s = f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, stride={layer.stride}"
    if layer.padding != (0, 0):
        s += f", padding={layer.padding!r}" if isinstance(layer.padding, str) else f", padding={layer.padding}"
    if layer.dilation != (1, 1):
        s += f", dilation={layer.dilation}"
    if layer.groups != 1:
        s += f", groups={layer.groups}"
    return s
