"""In-place conversion of a float model's ``nn.Conv2d``/``nn.Linear`` layers to shift layers (torchao-style).

``convert(model, config)`` walks ``model.named_modules()`` (module order), numbers every module whose type is
*exactly* ``nn.Conv2d`` or ``nn.Linear`` from 0, and replaces number ``i`` by ``Conv2dShift.from_float`` /
``LinearShift.from_float`` when ``i < config.depth`` (``depth=None``: all) and ``filter_fn(module, fqn)`` is
true. The count runs from the **start** (docs/numerics.md, Weights; the original DeepShift counted from the end); layers a
``filter_fn`` skips still take their number. Subclasses (e.g. ``nn.MultiheadAttention``'s
``NonDynamicallyQuantizableLinear``, whose weight the parent reads directly) and existing shift layers are
left alone and not counted. BatchNorm and everything else stays float.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from shiftcomp.adder_config import AdderConfig, ShiftAddConfig
from shiftcomp.adder_convert import convert_adder
from shiftcomp.config import ShiftConfig
from shiftcomp.layer_selection import convertible_layers, swap_modules
from shiftcomp.nn import Conv2dShift, LinearShift

__all__ = ["convert", "convertible_layers"]

_SWAP: dict[type, type] = {nn.Linear: LinearShift, nn.Conv2d: Conv2dShift}


def convert(model: nn.Module, config: ShiftConfig | None = None,
            filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Replace ``nn.Conv2d``/``nn.Linear`` layers of ``model`` by shift layers, in place; return the model.

    Args:
        model: any ``nn.Module``. If ``model`` itself is an ``nn.Conv2d``/``nn.Linear`` it cannot be replaced in
            place: the new shift layer is returned instead (so always use the return value).
        config: :class:`ShiftConfig` for every converted layer (default ``ShiftConfig()``); ``config.depth``
            limits conversion to the first ``depth`` layers in module order. An ``AdderConfig`` (AdderNet)
            or ``ShiftAddConfig`` (ShiftAddNet) converts as :mod:`shiftcomp.adder_convert` describes.
        filter_fn: ``filter_fn(module, fqn) -> bool``; ``False`` keeps that layer float.

    Returns:
        ``model`` (or the replacement of a bare layer). New layers keep the old ones' device, dtype, training
        mode, weights (Q: the float weight; PS: ``round(log2|w|)``/``sign(w)``) and bias. A module shared under
        several names is converted once and stays shared. Hooks registered on replaced modules are not carried.

    Raises:
        ValueError: a selected layer has an unsupported argument (``padding_mode != 'zeros'``); the message
            names the layer, and the model is left unchanged (everything is checked before any swap).
    """
    if config is None:
        config = ShiftConfig()
    if isinstance(config, (AdderConfig, ShiftAddConfig)):   # AdderNet / ShiftAddNet
        return convert_adder(model, config, filter_fn)
    if not isinstance(config, ShiftConfig):
        raise TypeError(f"convert: config must be a ShiftConfig, got {type(config).__name__}")
    depth = config.depth
    selected: list[tuple[str, nn.Module]] = []
    for i, (fqn, m) in enumerate(convertible_layers(model)):
        if depth is not None and i >= depth:
            break
        if filter_fn is not None and not filter_fn(m, fqn):
            continue
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise ValueError(f"convert: layer {fqn or '<root>'!r} ({type(m).__name__}) has "
                             f"padding_mode={m.padding_mode!r}; shift convolutions support only 'zeros'. "
                             f"Skip it with filter_fn or change its padding.")
        selected.append((fqn, m))

    replacement: dict[int, nn.Module] = {}
    for fqn, m in selected:
        replacement[id(m)] = _SWAP[type(m)].from_float(m, config)
    return swap_modules(model, replacement)
