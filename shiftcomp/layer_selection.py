"""Which layers of a float model a conversion may replace, and how a replacement is put in place.

Shared by :mod:`shiftcomp.convert` (shift layers) and :mod:`shiftcomp.adder_convert` (adder layers), so that
both number layers the same way.
"""
from __future__ import annotations

from torch import nn

__all__ = ["CONVERTIBLE_TYPES", "convertible_layers", "set_submodule", "swap_modules"]

#: exact types a conversion replaces (subclasses are left alone: their parents may read their weights)
CONVERTIBLE_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv2d)


def convertible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(fqn, module)`` of every exact ``nn.Conv2d``/``nn.Linear`` in ``named_modules`` order (the depth numbering).

    A module registered under several names is listed once, under its first name.
    """
    return [(name, m) for name, m in model.named_modules() if type(m) in CONVERTIBLE_TYPES]


def set_submodule(model: nn.Module, fqn: str, new: nn.Module) -> None:
    """Replace the submodule at ``fqn`` (a dotted path) by ``new``."""
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def swap_modules(model: nn.Module, replacement: dict[int, nn.Module]) -> nn.Module:
    """Put ``replacement[id(m)]`` in place of every module ``m`` it names, under every name ``m`` is registered
    (shared modules stay shared). Returns the model, or the root's replacement when the root itself is replaced."""
    if not replacement:
        return model
    if id(model) in replacement:
        return replacement[id(model)]
    for fqn, m in list(model.named_modules(remove_duplicate=False)):
        if fqn and id(m) in replacement:
            set_submodule(model, fqn, replacement[id(m)])
    return model
