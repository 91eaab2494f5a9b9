"""Segment plans of the sum-then-shift kernels, built from a layer's int8 weight codes.

A shift layer's output ``o`` is ``acc[o] = Σ_k sign[o,k] * (x[k] << (shift[o,k] - s0))``. The weights are
constants, so the terms of one output can be grouped by shift level ``d = shift - s0`` and by sign::

    acc[o] = Σ_d ( Σ_{k ∈ P[o,d]} x[k]  -  Σ_{k ∈ N[o,d]} x[k] ) << d

Integer regrouping is exact, so the result is the same integer as the reference's. A *segment* is one run of
terms of one output and one level (positive terms first, then negative ones); the kernel sums a segment in a
narrow *lane* dtype with adds/subs only, widens it once, shifts it once by ``d`` and adds it to the
accumulator. Zero weights (code 0) are in no segment.

Bounds (nothing ever wraps around: TVM emits ``add nsw``, so a wrapped signed sum would be undefined in LLVM,
not merely modular):

* every partial sum of a segment of ``t`` terms is at most ``t * x_absmax`` in magnitude, so a segment may
  hold ``cap = (2**(bits-1) - 1) // x_absmax`` terms in a ``bits``-wide lane dtype; longer runs are split.
  8-bit activations (``x_absmax = 128``) give 255 terms per ``int16`` segment;
* the lane dtype is ``int16`` when that allows at least :data:`MIN_INT16_SEGMENT` terms per segment
  (activation formats up to 12 bits), else ``int32`` (up to 31-bit formats), else ``int64``;
* the accumulator (``int32`` / ``int64``) is chosen by :func:`passes.accumulator.plan_accumulator` from the
  same bound over the whole output; each shifted segment and each partial sum of segments is bounded by it.

Codes are ``code = sign * (shift - s0 + 1)`` (``schedules.compute.weight_codes``): ``|code| - 1`` is ``d``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["SegmentPlan", "plan_segments", "lane_dtype_for", "segment_capacity", "MIN_INT16_SEGMENT",
           "LANE_BITS"]

#: bits of each lane dtype
LANE_BITS = {"int16": 16, "int32": 32, "int64": 64}
#: the int16 lane dtype is used when a segment may hold at least this many terms
MIN_INT16_SEGMENT = 8


def segment_capacity(lane_dtype: str, x_absmax: int) -> int:
    """Most terms one segment of ``lane_dtype`` may hold when ``|x| <= x_absmax`` (every partial sum fits)."""
    if x_absmax <= 0:
        raise ValueError(f"x_absmax must be >= 1, got {x_absmax}")
    return (2 ** (LANE_BITS[lane_dtype] - 1) - 1) // int(x_absmax)


def lane_dtype_for(x_absmax: int) -> str:
    """Narrowest lane dtype for activations bounded by ``x_absmax`` (see module doc)."""
    if segment_capacity("int16", x_absmax) >= MIN_INT16_SEGMENT:
        return "int16"
    if segment_capacity("int32", x_absmax) >= 1:
        return "int32"
    if segment_capacity("int64", x_absmax) >= 1:
        return "int64"
    raise ValueError(f"activations bounded by {x_absmax} do not fit an int64 lane")


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentPlan:
    """Per-output segment lists in CSR form (all arrays int32, C-contiguous).

    Attributes:
        n_out: number of outputs (rows of the code matrix).
        row_len: terms per row of the code matrix (``K`` for dense, ``Cg*KH*KW`` for conv).
        lane_dtype: dtype of the segment sums and of the activations the kernel reads.
        capacity: most terms per segment (the proven bound).
        x_absmax: activation bound the plan was proven for.
        seg_ptr: ``(n_out + 1,)``: segments of output ``o`` are ``seg_ptr[o] .. seg_ptr[o+1]-1``.
        seg_level: ``(S,)`` shift level ``d`` of each segment.
        seg_npos: ``(S,)`` number of positive terms (they come first in the segment).
        seg_tptr: ``(S + 1,)``: terms of segment ``s`` are ``term_index[seg_tptr[s] .. seg_tptr[s+1]-1]``.
        term_index: ``(T,)`` column ``k`` (index into the row of the code matrix) of each term.
    """

    n_out: int
    row_len: int
    lane_dtype: str
    capacity: int
    x_absmax: int
    seg_ptr: np.ndarray
    seg_level: np.ndarray
    seg_npos: np.ndarray
    seg_tptr: np.ndarray
    term_index: np.ndarray

    @property
    def n_segments(self) -> int:
        return int(self.seg_level.shape[0])

    @property
    def n_terms(self) -> int:
        return int(self.term_index.shape[0])

    @property
    def max_level(self) -> int:
        """Largest shift level used (-1 when there is no term)."""
        return int(self.seg_level.max()) if self.n_segments else -1

    def segment_sizes(self) -> np.ndarray:
        return np.diff(self.seg_tptr)

    def nbytes(self) -> int:
        """Bytes of the plan arrays (what the kernel reads besides the activations)."""
        return sum(a.nbytes for a in (self.seg_ptr, self.seg_level, self.seg_npos, self.seg_tptr,
                                      self.term_index))

    def integer_weights(self) -> np.ndarray:
        """The ``(n_out, row_len)`` int64 matrix ``sign * 2**d`` the plan encodes (for checks)."""
        w = np.zeros((self.n_out, self.row_len), np.int64)
        sizes = self.segment_sizes()
        seg_row = np.repeat(np.arange(self.n_out), np.diff(self.seg_ptr))
        term_seg = np.repeat(np.arange(self.n_segments), sizes)
        pos_in_seg = np.arange(self.n_terms) - np.repeat(self.seg_tptr[:-1], sizes)
        sign = np.where(pos_in_seg < self.seg_npos[term_seg], 1, -1)
        mag = np.left_shift(np.int64(1), self.seg_level[term_seg].astype(np.int64))
        np.add.at(w, (seg_row[term_seg], self.term_index), sign * mag)
        return w


def plan_segments(codes: np.ndarray, x_absmax: int, lane_dtype: str | None = None) -> SegmentPlan:
    """Group the terms of every output by level and sign into bounded segments.

    Args:
        codes: int8 weight codes ``(n_out, ...)`` (trailing dims are flattened into the row, C order:
            for conv ``(O, Cg, KH, KW)`` a term's index is ``(c * KH + kh) * KW + kw``).
        x_absmax: bound on ``|x_q|`` (``2**(I+F-1)`` for a ``Q(I, F)`` format).
        lane_dtype: force a lane dtype (``"int16"``, ``"int32"``, ``"int64"``); default
            :func:`lane_dtype_for`.

    Returns:
        The :class:`SegmentPlan`. Within an output, segments go by level, highest first; within a level,
        positive terms (by ascending ``k``) before negative ones, split every ``capacity`` terms.

    Raises:
        ValueError: a code of 0x80 (-128 is no code), or a forced lane dtype that holds no term.
    """
    c = np.asarray(codes)
    if c.ndim < 1:
        raise ValueError("codes must have an output dimension")
    n_out = int(c.shape[0])
    c = c.reshape(n_out, -1).astype(np.int16)
    row_len = int(c.shape[1])
    if np.any(c == -128):
        raise ValueError("code -128 is not a weight code (|code| - 1 must be <= 126)")
    x_absmax = int(x_absmax)
    lane = lane_dtype or lane_dtype_for(x_absmax)
    if lane not in LANE_BITS:
        raise ValueError(f"lane_dtype must be one of {sorted(LANE_BITS)}, got {lane!r}")
    cap = segment_capacity(lane, x_absmax)
    if cap < 1:
        raise ValueError(f"a {lane} segment cannot hold one activation bounded by {x_absmax}")

    row, col = np.nonzero(c)
    val = c[row, col]
    level = np.abs(val) - 1
    neg = (val < 0).astype(np.int8)
    order = np.lexsort((col, neg, -level, row))            # row, level desc, positives first, k asc
    row, col, level, neg = row[order], col[order], level[order], neg[order]
    n = row.shape[0]
    i32 = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.int32))  # noqa: E731
    if n == 0:
        return SegmentPlan(n_out, row_len, lane, cap, x_absmax, i32(np.zeros(n_out + 1)), i32([]), i32([]),
                           i32([0]), i32([]))
    new_run = np.ones(n, bool)
    new_run[1:] = (row[1:] != row[:-1]) | (level[1:] != level[:-1])
    run_start = np.flatnonzero(new_run)
    pos = np.arange(n) - np.repeat(run_start, np.diff(np.append(run_start, n)))
    starts = np.flatnonzero(new_run | (pos % cap == 0))
    seg_row = row[starts]
    seg_ptr = np.zeros(n_out + 1, np.int64)
    np.cumsum(np.bincount(seg_row, minlength=n_out), out=seg_ptr[1:])
    npos = np.add.reduceat(1 - neg.astype(np.int64), starts)
    return SegmentPlan(n_out=n_out, row_len=row_len, lane_dtype=lane, capacity=cap, x_absmax=x_absmax,
                       seg_ptr=i32(seg_ptr), seg_level=i32(level[starts]), seg_npos=i32(npos),
                       seg_tptr=i32(np.append(starts, n)), term_index=i32(col))
