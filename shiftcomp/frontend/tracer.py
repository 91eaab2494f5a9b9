"""torch.fx tracing with the shift layers kept as leaves (one ``call_module`` node per shift layer)."""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from shiftcomp.nn import Conv2dShift, LinearShift, is_shift_layer

__all__ = ["ShiftTracer", "trace", "shift_layer_types", "is_shift_layer"]


def shift_layer_types() -> tuple[type, ...]:
    """The shift layer classes the importer reads (``shiftcomp.nn.LinearShift``, ``shiftcomp.nn.Conv2dShift``)."""
    return (LinearShift, Conv2dShift)


def _is_adder_layer(m: nn.Module) -> bool:
    from .adder_layers import is_adder_layer

    return is_adder_layer(m)


class ShiftTracer(fx.Tracer):
    """An fx tracer that does not trace into shift layers (they become ``call_module`` leaves).

    Stack traces are recorded so that import errors can point at the user's source line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:  # noqa: D102
        if is_shift_layer(m) or _is_adder_layer(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (shift layers as leaves) into an ``fx.GraphModule``.

    The root module is always traced through its ``forward``, so a bare shift layer is first wrapped in a
    one-child container: it then appears as one ``call_module`` node with module path ``"layer"``.
    """
    if is_shift_layer(model) or _is_adder_layer(model):
        model = _Bare(model)
    graph = ShiftTracer().trace(model)
    name = type(model).__name__ if not isinstance(model, _Bare) else type(model.layer).__name__
    return fx.GraphModule(model, graph, class_name=name)


class _Bare(nn.Module):
    """Container for a bare shift layer, so that the layer becomes an fx leaf named ``layer``."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.layer(x)
