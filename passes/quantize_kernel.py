"""The activation-quantisation prologue as one TIR kernel (what ``LowerShiftOps`` puts before a shift kernel).

Same operations, in the same order, as the plain-Relax prologue of ``shiftcomp/frontend/quantize.py``
(which LegalizeOps would turn into ``T.nearbyint``/``T.floor``, ``T.max(T.min(.))`` and casts), fused
into one elementwise PrimFunc. The PrimFunc carries ``{"shiftcomp.role": "prologue"}`` so the
multiplication audit can count its one multiply per element (``x * 2**F``) as a prologue multiply.
"""
from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

from schedules.compute import quantize_value

__all__ = ["quantize_primfunc", "ROLE_ATTR"]

ROLE_ATTR = "shiftcomp.role"  #: PrimFunc attribute naming a kernel's role for the audit


def quantize_primfunc(shape: Sequence[int], int_bits: int, frac_bits: int, rounding: str,
                      qmax: int | None = None) -> tirx.PrimFunc:
    """``x (float32, shape) -> x_q (int32, shape)``: ``clamp(round_mode(x * 2**F), qmin, qmax)``.

    Args:
        shape: static tensor shape.
        int_bits, frac_bits: the activation format Q(I, F), ``1 <= I + F <= 32``.
        rounding: ``"nearest"`` (``nearbyint``: ties to even) or ``"floor"``.
        qmax: a smaller upper clamp than ``2**(I+F-1) - 1`` (``numerics="deepshift"``), or ``None``.
    """
    X = te.placeholder(tuple(int(d) for d in shape), "float32", name="x")

    def f(*idx):
        return quantize_value(X[idx], int_bits, frac_bits, rounding, qmax)

    Y = te.compute(X.shape, f, name="x_q")
    prim = te.create_prim_func([X, Y], index_dtype_override="int64").without_attr("global_symbol")
    return prim.with_attr(ROLE_ATTR, "prologue")
