"""CUDA schedules of the shift kernels in :mod:`schedules.compute` (thread-binding baseline).

One thread per accumulator element: the reduction runs sequentially in a register (``local``
accumulator), so every output is computed in a fixed order and integer results are exact by
construction. Consecutive threads take consecutive output columns (dense) / output pixels ``ow``
(conv), so the int8 code reads (dense, ``(NBLK, K, NB)`` layout) and the NCHW activation reads (conv)
are coalesced, and the conv codes are warp-uniform broadcasts.

* dense: threads over ``(i, j)`` of ``acc (M, NBLK*NB)``; the epilogue runs in the same thread
  (``reverse_compute_at``, identity index map, predicated to ``j < N``).
* conv2d: the padding stage is inlined (``if_then_else`` on the loads; float-activation kernels with
  padding materialise it in a first kernel instead); threads over
  ``(n, g, og, oh, ow)``; the accumulator is written back to a global buffer and the epilogue is a second
  kernel over ``(n, o, oh, ow)`` (its index map ``o -> (o // Og, o % Og)`` is not a per-thread identity).

This is a correct, simple baseline, not a tuned one (no shared-memory tiling, no split-K for GEMV);
MetaSchedule / DLight can replace it. Verified here by compiling to CUDA C and to PTX with nvcc; running
it needs a GPU (tests skip cleanly without one).
"""
from __future__ import annotations

from typing import Optional

import tvm
from tvm import s_tir

from .compute import Conv2dSpec, DenseSpec

__all__ = ["schedule_dense", "schedule_conv2d", "dense_schedule", "conv2d_schedule", "THREADS"]

#: threads per block
THREADS = 128


def _bind_1d(sch: s_tir.Schedule, loops, threads: int = THREADS):
    fused = sch.fuse(*loops)
    extent = int(sch.get(fused).extent)
    # never more threads than iterations: a block-level write-back placed under a predicated thread loop
    # by reverse_compute_at does not inherit the predicate when its region clamps to a single element
    bx, tx = sch.split(fused, [None, max(1, min(threads, extent))])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return bx, tx


def dense_schedule(prim: tvm.tirx.PrimFunc, spec: DenseSpec, target: Optional[tvm.target.Target] = None
                   ) -> s_tir.Schedule:
    """Schedule a :func:`~schedules.compute.shift_dense` / ``shift_dense_float`` PrimFunc for CUDA.

    Args:
        prim: the unscheduled PrimFunc (blocks ``acc``, ``out``).
        spec: its :class:`DenseSpec`.
        target: the CUDA target (unused today).

    Returns:
        The ``tvm.s_tir.Schedule``: ``ceil(M * NBLK*NB / 128)`` blocks of 128 threads.
    """
    sch = s_tir.Schedule(prim)
    acc = sch.get_sblock("acc")
    out = sch.get_sblock("out")
    i, j, k = sch.get_loops(acc)
    _, tx = _bind_1d(sch, [i, j])
    sch.set_scope(acc, 0, "local")
    sch.decompose_reduction(acc, k)
    sch.reverse_compute_at(out, tx)
    return sch


def conv2d_schedule(prim: tvm.tirx.PrimFunc, spec: Conv2dSpec, target: Optional[tvm.target.Target] = None
                    ) -> s_tir.Schedule:
    """Schedule a :func:`~schedules.compute.shift_conv2d` / ``shift_conv2d_float`` PrimFunc for CUDA.

    Args:
        prim: the unscheduled PrimFunc (blocks ``pad``, ``acc``, ``out``).
        spec: its :class:`Conv2dSpec`.
        target: the CUDA target (unused today).

    Returns:
        The ``tvm.s_tir.Schedule`` (two kernels: accumulate, epilogue; three with a materialised pad).
    """
    sch = s_tir.Schedule(prim)
    if not str(prim.params[0].ty.dtype) == "float32":
        sch.compute_inline(sch.get_sblock("negpad"))   # fixed point: 0 - x recomputed inline per term
    pad = sch.get_sblock("pad")
    float_mode = str(prim.params[0].ty.dtype) == "float32"
    if float_mode and any(spec.padding):
        # the float term is a long integer-ldexp expression that the CUDA printer repeats per use;
        # with the padding condition inlined into it the source grows ~3x and nvcc slows down a lot
        _bind_1d(sch, sch.get_loops(pad))
    else:
        sch.compute_inline(pad)
    acc = sch.get_sblock("acc")
    out = sch.get_sblock("out")
    n, g, og, oh, ow, ry, rx, rc = sch.get_loops(acc)
    _, tx = _bind_1d(sch, [n, g, og, oh, ow])
    wb = sch.cache_write(acc, 0, "local")
    sch.reverse_compute_at(wb, tx)
    sch.decompose_reduction(acc, ry)
    _bind_1d(sch, sch.get_loops(out))
    return sch


def schedule_dense(prim: tvm.tirx.PrimFunc, spec: DenseSpec, target: Optional[tvm.target.Target] = None
                   ) -> tvm.tirx.PrimFunc:
    """The scheduled dense PrimFunc (same signature and attributes as ``prim``); see :func:`dense_schedule`."""
    return dense_schedule(prim, spec, target).mod["main"]


def schedule_conv2d(prim: tvm.tirx.PrimFunc, spec: Conv2dSpec, target: Optional[tvm.target.Target] = None
                    ) -> tvm.tirx.PrimFunc:
    """The scheduled conv2d PrimFunc (same signature and attributes as ``prim``); see :func:`conv2d_schedule`."""
    return conv2d_schedule(prim, spec, target).mod["main"]
