"""Accumulator-width analysis of a shift layer from its constant weights (docs/numerics.md, "Accumulator").

For a layer with integer weights ``(shift, sign)``, accumulator shift ``s0`` (smallest used shift) and
activations in ``Q(I, F)`` (``|x_q| <= 2**(I+F-1)``) the exact accumulator is bounded by

    bound = max_o Σ_k |sign[o,k]| * 2**(shift[o,k] - s0) * 2**(I+F-1)

computed here with exact Python integers, independently of the PyTorch reference
(``shiftcomp.reference.accumulator_bound``); the tests assert both agree. Every partial sum and every single term
``x_q << (shift - s0)`` is bounded by it as well. The kernel accumulates in

* ``int32`` when ``bound < 2**31``,
* ``int64`` when ``bound < 2**63``,
* otherwise the compiler refuses with :class:`AccumulatorOverflowError` (names the layer, suggests a
  narrower activation format or shift range). No silent wrap-around, ever.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .errors import AccumulatorOverflowError

__all__ = ["AccumulatorPlan", "plan_accumulator", "acc_shift", "accumulator_bound", "INT32_LIMIT", "INT64_LIMIT"]

INT32_LIMIT = 2 ** 31  #: int32 accumulators hold |acc| < 2**31
INT64_LIMIT = 2 ** 63  #: int64 accumulators hold |acc| < 2**63


@dataclasses.dataclass(frozen=True)
class AccumulatorPlan:
    """Accumulator decision for one layer.

    Attributes:
        layer: layer name.
        dtype: ``"int32"`` or ``"int64"``.
        bound: the proven bound on ``|acc|`` (Python int).
        x_absmax: the activation bound used, ``2**(I+F-1)``.
        s0: the accumulator shift.
    """

    layer: str
    dtype: str
    bound: int
    x_absmax: int
    s0: int

    @property
    def bits(self) -> int:
        """Bits a signed accumulator needs for the bound (including the sign)."""
        return self.bound.bit_length() + 1


def acc_shift(shift: np.ndarray, sign: np.ndarray) -> int:
    """``s0``: the smallest shift over weights with a nonzero sign (0 when there is none)."""
    used = np.asarray(sign) != 0
    return int(np.asarray(shift, np.int64)[used].min()) if used.any() else 0


def accumulator_bound(shift: np.ndarray, sign: np.ndarray, x_absmax: int, s0: int) -> int:
    """``max_o Σ_k |sign[o,k]| * 2**(shift[o,k] - s0) * x_absmax`` as an exact Python int (dim 0 = outputs).

    Rows are reduced as histograms of ``shift - s0`` so that huge exponents never overflow a machine int.
    """
    shift = np.asarray(shift, np.int64)
    if shift.size == 0 or int(x_absmax) == 0:
        return 0
    rows = shift.reshape(shift.shape[0], -1)
    used = (np.asarray(sign) != 0).reshape(rows.shape)
    best = 0
    for r, u in zip(rows, used):
        if not u.any():
            continue
        exps, counts = np.unique(r[u] - int(s0), return_counts=True)
        if int(exps[0]) < 0:
            raise ValueError(f"s0={s0} is above a used shift ({int(exps[0]) + int(s0)})")
        best = max(best, sum(int(c) << int(e) for e, c in zip(exps, counts)))
    return best * int(x_absmax)


def plan_accumulator(layer: str, shift: np.ndarray, sign: np.ndarray, act_bits: tuple[int, int],
                     s0: int | None = None) -> AccumulatorPlan:
    """Choose the accumulator dtype of one fixed-point shift layer (see module doc).

    Args:
        layer: layer name (for the error message).
        shift, sign: integer weights (int8 arrays, dim 0 = output channel).
        act_bits: ``(I, F)``; ``|x_q| <= 2**(I+F-1)``.
        s0: accumulator shift; default :func:`acc_shift`.

    Raises:
        AccumulatorOverflowError: the bound is ``>= 2**63``.
    """
    if s0 is None:
        s0 = acc_shift(shift, sign)
    x_absmax = 2 ** (int(act_bits[0]) + int(act_bits[1]) - 1)
    bound = accumulator_bound(shift, sign, x_absmax, int(s0))
    if bound < INT32_LIMIT:
        dtype = "int32"
    elif bound < INT64_LIMIT:
        dtype = "int64"
    else:
        raise AccumulatorOverflowError(layer, bound)
    return AccumulatorPlan(layer=layer, dtype=dtype, bound=bound, x_absmax=x_absmax, s0=int(s0))
