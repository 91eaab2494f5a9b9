"""Errors raised by the shiftcomp compiler (frontend, passes, build, artifact).

Every error names *where* the problem is (fx node / module path / layer name / file) so that a user can
act on it without reading compiler internals. All of them derive from :class:`ShiftCompError`.
"""
from __future__ import annotations


class ShiftCompError(Exception):
    """Base class of every error the shiftcomp compiler raises on purpose."""


class UnsupportedOpError(ShiftCompError):
    """The model contains an operator the frontend cannot import.

    Attributes:
        op: the unsupported operator (module class name, function or method name).
        location: where it is: the fx node name and the module path (``qualname``) when known.
    """

    def __init__(self, op: str, location: str, detail: str = "") -> None:
        self.op = op
        self.location = location
        self.detail = detail
        msg = f"unsupported operator {op!r} at {location}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class FrontendError(ShiftCompError):
    """A supported operator failed to import (bad arguments, dynamic shapes, ...)."""


class AccumulatorOverflowError(ShiftCompError):
    """A shift layer's exact accumulator cannot be bounded below 2**63 (SPEC §3).

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


class ArtifactError(ShiftCompError):
    """An artifact file is not a shiftcomp artifact, is truncated, or is corrupted."""


class SignatureError(ShiftCompError, ValueError):
    """Inputs given to a compiled model do not match its compiled signature (count, shape, dtype)."""


class BackendOptionError(ShiftCompError, ValueError):
    """Bad ``options`` for the ``torch.compile`` backend ``"shiftcomp"`` (an unknown key or an invalid value)."""
