"""Which layers of a float model a conversion may replace, and how a replacement is put in place.

Shared by :mod:`shiftcomp.convert` (shift layers) and :mod:`shiftcomp.adder_convert` (adder layers), so that
both number layers the same way.
"""
from __future__ import annotations

from torch import nn

__all__ = ["CONVERTIBLE_TYPES", "convertible_layers", "set_submodule"]

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
