"""Errors raised by the shiftcomp compiler (frontend, passes, build, artifact).

Every error names *where* the problem is (fx node / module path / layer name / file) so that a user can
act on it without reading compiler internals. All of them derive from :class:`ShiftCompError`.
"""
from __future__ import annotations

from passes.errors import AccumulatorOverflowError, LoweringError, ShiftCompError

__all__ = ["ShiftCompError", "UnsupportedOpError", "FrontendError", "AccumulatorOverflowError", "LoweringError",
           "ArtifactError", "SignatureError"]


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


class ArtifactError(ShiftCompError):
    """An artifact file is not a shiftcomp artifact, is truncated, or is corrupted."""


class SignatureError(ShiftCompError, ValueError):
    """Inputs given to a compiled model do not match its compiled signature (count, shape, dtype)."""


class BackendOptionError(ShiftCompError, ValueError):
    """Bad ``options`` for the ``torch.compile`` backend ``"shiftcomp"`` (an unknown key or an invalid value)."""
