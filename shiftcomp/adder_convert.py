"""Conversion of a float model to AdderNet (:class:`AdderConfig`) or ShiftAddNet (:class:`ShiftAddConfig`).

The layers are numbered as in :func:`shiftcomp.convert` (every exact ``nn.Conv2d``/``nn.Linear`` in module
order, from the start); ``depth`` and ``filter_fn`` select them the same way.

* ``AdderConfig``: ``nn.Conv2d`` -> :class:`~shiftcomp.nn.Conv2dAdder`, ``nn.Linear`` ->
  :class:`~shiftcomp.nn.LinearAdder` (same geometry, the float weight and bias carried over).
* ``ShiftAddConfig`` (ShiftAddNet): ``nn.Conv2d`` (``k×k``) -> :class:`ShiftAddConv2d`: a shift conv with the
  original geometry (stride, padding, dilation, groups; the float weight converted as by ``ShiftConfig``, no
  bias) followed by an adder conv ``out -> out``, ``k×k``, stride 1, 'same' padding (fresh AdderNet
  initialisation, carrying the original bias). ``nn.Linear`` -> :class:`~shiftcomp.nn.LinearShift`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from shiftcomp.adder import Conv2dAdder, LinearAdder
from shiftcomp.adder_config import AdderConfig, ShiftAddConfig
from shiftcomp.layer_selection import convertible_layers, swap_modules

__all__ = ["ShiftAddConv2d", "convert_adder"]


class ShiftAddConv2d(nn.Module):
    """ShiftAddNet's replacement of one convolution: ``adder(shift(x))``.

    Attributes:
        shift: :class:`~shiftcomp.nn.Conv2dShift` with the original conv's geometry (no bias).
        adder: :class:`~shiftcomp.nn.Conv2dAdder` ``out -> out``, same kernel size, stride 1, 'same' padding.
    """

    def __init__(self, shift: nn.Module, adder: nn.Module) -> None:
        super().__init__()
        self.shift = shift
        self.adder = adder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adder(self.shift(x))

    @classmethod
    def from_float(cls, module: nn.Conv2d, config: ShiftAddConfig) -> "ShiftAddConv2d":
        """Build the pair from an ``nn.Conv2d`` (see the module docstring)."""
        from shiftcomp.nn import Conv2dShift

        w = module.weight
        tmp = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                        module.padding, module.dilation, module.groups, bias=False, device=w.device,
                        dtype=w.dtype)
        with torch.no_grad():
            tmp.weight.copy_(w)
        tmp.train(module.training)
        shift = Conv2dShift.from_float(tmp, config.shift)
        kh, kw = module.kernel_size
        dh, dw = module.dilation
        pad = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        same_odd = (dh * (kh - 1)) % 2 == 0 and (dw * (kw - 1)) % 2 == 0
        adder = Conv2dAdder(module.out_channels, module.out_channels, (kh, kw), stride=1,
                            padding=pad if same_odd else "same", dilation=module.dilation,
                            bias=module.bias is not None, config=config.adder, device=w.device, dtype=w.dtype)
        if module.bias is not None:
            with torch.no_grad():
                adder.bias.copy_(module.bias)
        adder.train(module.training)
        new = cls(shift, adder)
        new.train(module.training)
        return new


def _replace(model: nn.Module, config, filter_fn) -> nn.Module:
    depth = config.depth
    selected = []
    for i, (fqn, m) in enumerate(convertible_layers(model)):
        if depth is not None and i >= depth:
            break
        if filter_fn is not None and not filter_fn(m, fqn):
            continue
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise ValueError(f"convert: layer {fqn or '<root>'!r} has padding_mode={m.padding_mode!r}; adder and "
                             f"shift convolutions support only 'zeros'. Skip it with filter_fn.")
        selected.append((fqn, m))
    replacement: dict[int, nn.Module] = {}
    for fqn, m in selected:
        if isinstance(config, AdderConfig):
            new = (Conv2dAdder if isinstance(m, nn.Conv2d) else LinearAdder).from_float(m, config)
        elif isinstance(m, nn.Conv2d):
            new = ShiftAddConv2d.from_float(m, config)
        else:
            from shiftcomp.nn import LinearShift

            new = LinearShift.from_float(m, config.shift)
        replacement[id(m)] = new
    return swap_modules(model, replacement)


def convert_adder(model: nn.Module, config: AdderConfig | ShiftAddConfig,
                  filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Convert ``model`` in place to AdderNet or ShiftAddNet (module docstring); return it (or the replacement
    of a bare layer). ``filter_fn(module, fqn) -> False`` keeps a layer float."""
    if not isinstance(config, (AdderConfig, ShiftAddConfig)):
        raise TypeError(f"convert_adder: config must be an AdderConfig or ShiftAddConfig, got "
                        f"{type(config).__name__}")
    return _replace(model, config, filter_fn)
