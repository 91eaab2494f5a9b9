"""Errors the compiler passes raise; the base class of every shiftcomp error lives here so that the passes
need nothing from the ``shiftcomp`` package (dependencies point one way: shiftcomp -> passes -> schedules).
Users import them from :mod:`shiftcomp.errors`, which re-exports these.
"""
from __future__ import annotations

__all__ = ["ShiftCompError", "AccumulatorOverflowError", "LoweringError"]


class ShiftCompError(Exception):
    """Base class of every error the shiftcomp compiler raises on purpose."""


class AccumulatorOverflowError(ShiftCompError):
    """A shift layer's exact accumulator cannot be bounded below 2**63 (see docs/numerics.md, "Accumulator").

    Attributes:
        layer: the layer name (module path).
        bound: the proven bound ``max_o Σ_k 2**(shift-s0) * max|x_q|`` (a Python int).
    """

    def __init__(self, layer: str, bound: int, detail: str = "") -> None:
        self.layer = layer
        self.bound = bound
        super().__init__(
            f"shift layer {layer!r}: the exact accumulator needs up to {bound.bit_length() + 1} bits "
            f"(bound {bound} >= 2**63), so it fits neither int32 nor int64. Use a narrower activation "
            f"format (fewer act_bits I+F) or a narrower shift range (fewer weight_bits / shift_range)."
            + (f" {detail}" if detail else "")
        )


class LoweringError(ShiftCompError):
    """A shift op cannot be lowered to a multiplication-free kernel."""
