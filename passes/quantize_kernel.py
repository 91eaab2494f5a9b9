"""The activation-quantisation prologue as one TIR kernel (what ``LowerShiftOps`` puts before a shift kernel).

Same operations, in the same order, as the plain-Relax prologue of ``shiftcomp/frontend/quantize.py``
(which LegalizeOps would turn into ``T.nearbyint``/``T.floor``, ``T.max(T.min(.))`` and casts), fused
into one elementwise PrimFunc. The PrimFunc carries ``{"shiftcomp.role": "prologue"}`` so the
multiplication audit can count its one multiply per element (``x * 2**F``) as a prologue multiply.
"""
from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

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
    n = int(int_bits) + int(frac_bits)
    if not 1 <= n <= 32:
        raise ValueError(f"activation format Q({int_bits},{frac_bits}) has {n} bits; need 1..32")
    if rounding not in ("nearest", "floor"):
        raise ValueError(f"unknown rounding {rounding!r}")
    qmin, qmax = -(2 ** (n - 1)), (2 ** (n - 1) - 1 if qmax is None else min(int(qmax), 2 ** (n - 1) - 1))
    X = te.placeholder(tuple(int(d) for d in shape), "float32", name="x")
    scale = tirx.const(2.0 ** frac_bits, "float32")

    def f(*idx):
        v = X[idx] * scale
        v = tirx.nearbyint(v) if rounding == "nearest" else tirx.floor(v)
        if n - 1 <= 24:
            v = tirx.max(tirx.min(v, tirx.const(float(qmax), "float32")), tirx.const(float(qmin), "float32"))
            return v.astype("int32")
        v = tirx.max(tirx.min(v, tirx.const(float(2 ** (n - 1)), "float32")), tirx.const(float(qmin), "float32"))
        w = tirx.min(v.astype("int64"), tirx.const(qmax, "int64"))
        return w.astype("int32")

    Y = te.compute(X.shape, f, name="x_q")
    prim = te.create_prim_func([X, Y], index_dtype_override="int64").without_attr("global_symbol")
    return prim.with_attr(ROLE_ATTR, "prologue")
