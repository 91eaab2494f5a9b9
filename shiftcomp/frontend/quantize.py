"""The activation-quantisation prologue of a shift layer, as plain Relax ops (docs/numerics.md, Activations).

``x_q = clamp(round_mode(x * 2**F), -2**(I+F-1), 2**(I+F-1) - 1)`` as int32, where

* ``x * 2**F`` is one float32 multiply by a power of two: exact, except that a product beyond float32
  range becomes +-inf, which the clamp maps to the right end (as in PyTorch).
* ``round_mode = "nearest"`` is ties-to-even: ``relax.op.round`` legalises to ``T.nearbyint``, i.e.
  ``llvm.nearbyint`` on CPU (``vroundps`` with the current rounding mode, which is round-to-nearest-even
  by default) and ``nearbyintf`` on CUDA -- *not* ``llvm.round`` (ties away from zero). The ties are
  tested (tests/test_frontend.py::test_quantize_ties_and_clamp). ``"floor"`` is ``relax.op.floor``.
* The clamp is done in float32 while both bounds are exact float32 values (``I+F <= 25``). For wider
  formats the upper bound ``2**(I+F-1) - 1`` is not a float32, so the value is clamped to
  ``[-2**(I+F-1), 2**(I+F-1)]`` in float32 (exact), cast to int64, clamped to ``qmax`` there, and cast
  to int32. ``I + F <= 32`` (the kernels take int32 activations).
"""
from __future__ import annotations

from tvm import relax

__all__ = ["emit_quantize", "act_range", "MAX_ACT_BITS"]

MAX_ACT_BITS = 32  #: widest activation format I+F the kernels accept (int32 inputs)


def act_range(int_bits: int, frac_bits: int) -> tuple[int, int]:
    """``(qmin, qmax)`` of the signed fixed-point format Q(I, F): ``(-2**(I+F-1), 2**(I+F-1)-1)``."""
    n = int_bits + frac_bits
    return -(2 ** (n - 1)), 2 ** (n - 1) - 1


def emit_quantize(bb: relax.BlockBuilder, x: relax.Expr, int_bits: int, frac_bits: int,
                  rounding: str, qmax: int | None = None) -> relax.Var:
    """Emit ``x (float32) -> x_q (int32)`` into ``bb``'s current dataflow block (see module doc).

    Args:
        bb: the block builder (inside a dataflow block).
        x: float32 tensor expression.
        int_bits: I, integer bits including the sign, ``I + F`` in ``1..32``.
        frac_bits: F, fraction bits (may be negative or zero).
        rounding: ``"nearest"`` (ties to even) or ``"floor"``.
        qmax: a smaller upper clamp than ``2**(I+F-1) - 1`` (``numerics="deepshift"``), or ``None``.
    """
    n = int_bits + frac_bits
    if not 1 <= n <= MAX_ACT_BITS:
        raise ValueError(f"activation format Q({int_bits},{frac_bits}) has {n} bits; need 1..{MAX_ACT_BITS}")
    if rounding not in ("nearest", "floor"):
        raise ValueError(f"unknown activation rounding {rounding!r} (expected 'nearest' or 'floor')")
    qmin, top = act_range(int_bits, frac_bits)
    qmax = top if qmax is None else min(int(qmax), top)
    scaled = bb.emit(relax.op.multiply(x, relax.const(2.0 ** frac_bits, "float32")))
    rounded = bb.emit(relax.op.round(scaled) if rounding == "nearest" else relax.op.floor(scaled))
    if n - 1 <= 24:  # both bounds are exact float32 values
        clamped = bb.emit(relax.op.clip(rounded, float(qmin), float(qmax)))
        return bb.emit(relax.op.astype(clamped, "int32"))
    clamped = bb.emit(relax.op.clip(rounded, float(qmin), float(2 ** (n - 1))))
    wide = bb.emit(relax.op.astype(clamped, "int64"))
    wide = bb.emit(relax.op.minimum(wide, relax.const(qmax, "int64")))
    return bb.emit(relax.op.astype(wide, "int32"))
