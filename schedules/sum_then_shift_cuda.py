"""Sum-then-shift on CUDA: the design of :mod:`schedules.sum_then_shift` with one thread per output pixel.

Entry point::

    k = build(kind, spec, codes, target, act_bits=(I, F))      # kind "conv2d" or "dense"; -> SumThenShiftCudaKernel
    # k.main: PrimFunc (X_q int32 (NCHW | (M, K)), seg_ptr, seg_level, seg_npos, seg_tptr, term, [bias], out f32)
    # k.weight_inputs == k.derive(codes): the plan (schedules.sum_then_shift_layout.derive_cuda_conv2d_inputs)

Per output channel ``o`` the terms are grouped by shift level and sign into segments
(:func:`schedules.segments.plan_segments`), exactly as on the CPU::

    acc = sum_k ( sum_{i in P_k} x_i - sum_{i in N_k} x_i ) << k

A block of threads computes one (image, output channel, chunk of pixels): every thread of a block runs the
same segment loops (the plan is the block's, so a warp never diverges in them) over its own output pixel,
and the threads of a warp read consecutive pixels of the same input row per term (coalesced, or strided by
the conv stride). The segment sums are int32 registers (GPU integer adds are 32-bit, so int16 lanes would
save nothing), proven in bound like the CPU's (a segment holds at most ``(2**31 - 1) // x_absmax`` terms),
then shifted once into the accumulator dtype. A term is ``c << 16 | kh << 8 | kw`` (conv: the kernel
computes the input position and reads zero outside the image, so no padded copy is needed) or the input
index (dense). No multiply touches data; the epilogue's float scale is the one multiply, as in every kernel.

``build(..., gpu=False)`` gives the same loops unbound (serial), which LLVM runs on the CPU: the tests check
that one against the integer reference, and the CUDA source itself (compiled with g++ and thread shims,
:mod:`tests.schedules.test_sum_then_shift_cuda`) against it.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Union

import numpy as np
import tvm
from tvm import tirx
from tvm.script import tirx as T

from .compute import _epilogue, needs_exact_scale
from .specs import Conv2dSpec, DenseSpec
from .sum_then_shift import _check_bound, _drop_param, _x_absmax
from .sum_then_shift_layout import CUDA_TERM_C_SHIFT, CUDA_TERM_KH_SHIFT, cuda_lane_dtype, derive_cuda_conv2d_inputs
from .target import resolve_target

__all__ = ["THREADS", "SumThenShiftCudaKernel", "build", "applicable"]

#: most threads per block (one output pixel each); fewer when the image has fewer pixels (rounded to a warp)
THREADS = 256


def applicable(kind: str, spec: Any, act_bits: Any, target: Any) -> str:
    """Why the CUDA sum-then-shift kernel does not compute this layer (``""`` when it does)."""
    if resolve_target(target).kind.name != "cuda":
        return "not a CUDA target"
    if act_bits is None:
        return "float activations"
    if kind == "conv2d" and isinstance(spec, Conv2dSpec):
        return ""
    if kind == "dense" and isinstance(spec, DenseSpec):
        return "" if int(spec.batch) > 1 else "batch-1 dense (one row: one busy thread per block)"
    return f"kind {kind!r}"


@dataclasses.dataclass(frozen=True, eq=False)
class SumThenShiftCudaKernel:
    """A built CUDA sum-then-shift kernel: ``main`` (thread-bound, or serial loops with ``gpu=False``), its
    plan ``weight_inputs`` and ``derive`` (``codes -> weight_inputs``), the segment-sum ``lane_dtype`` and the
    launch (``blocks``, ``threads``)."""

    kind: str
    spec: Any
    main: tirx.PrimFunc
    weight_inputs: tuple[np.ndarray, ...]
    derive: Callable[[np.ndarray], list[np.ndarray]]
    lane_dtype: str
    blocks: int
    threads: int


def build(kind: str, spec: Union[Conv2dSpec, DenseSpec], codes: np.ndarray, target: Any,
          act_bits: tuple[int, int], gpu: bool = True) -> SumThenShiftCudaKernel:
    """Build the CUDA sum-then-shift kernel of one fixed-point conv2d / batched dense layer.

    Args:
        kind: ``"conv2d"`` (any stride, padding, dilation, groups) or ``"dense"`` (batch > 1).
        spec: its spec; ``spec.acc_dtype`` the accumulator the accumulator pass proved.
        codes: int8 codes ``sign * (shift - s0 + 1)``, PyTorch layout.
        target: a CUDA target (``gpu=False``: any, the loops stay serial for a CPU check).
        act_bits: the activation format ``(I, F)``, ``F == spec.frac_bits``.
        gpu: bind the loops to CUDA blocks and threads.

    Raises:
        ValueError: when :func:`applicable` says why not, or the accumulator cannot hold the bound.
    """
    codes = np.asarray(codes)
    why = applicable(kind, spec, act_bits, target if gpu else {"kind": "cuda"})
    if why:
        raise ValueError(f"CUDA sum-then-shift kernel: {why}")
    if int(act_bits[1]) != int(spec.frac_bits):
        raise ValueError(f"act_bits F={act_bits[1]} differs from spec.frac_bits={spec.frac_bits}")
    want = ((spec.out_features, spec.in_features) if kind == "dense" else
            (spec.out_channels, spec.group_in, spec.kernel_h, spec.kernel_w))
    if tuple(codes.shape) != want:
        raise ValueError(f"codes have shape {tuple(codes.shape)}, the spec needs {want}")
    x_absmax = _x_absmax(act_bits)
    _check_bound(spec, codes, x_absmax)
    lane = cuda_lane_dtype(x_absmax)
    derive = functools.partial(derive_cuda_conv2d_inputs, spec, x_absmax=x_absmax)
    main, blocks, threads = _primfunc(kind, spec, lane, bool(gpu))
    return SumThenShiftCudaKernel(kind=kind, spec=spec, main=main, weight_inputs=tuple(derive(codes)),
                                  derive=derive, lane_dtype=lane, blocks=blocks, threads=threads)


@functools.lru_cache(maxsize=128)
def _primfunc(kind: str, spec: Any, lane: str, gpu: bool) -> tuple[tirx.PrimFunc, int, int]:
    dense = kind == "dense"
    acc = spec.acc_dtype
    has_bias = bool(spec.has_bias)
    exact = needs_exact_scale(spec)
    n_seg = tirx.Var("n_seg", "int32")
    n_term = tirx.Var("n_term", "int32")
    if dense:
        NI, O, NP = 1, spec.out_features, spec.batch
        x_shape, out_shape = (spec.batch, spec.in_features), (spec.batch, spec.out_features)
    else:
        NI, O = spec.batch, spec.out_channels
        OH, OW = spec.out_hw
        NP = OH * OW
        x_shape, out_shape = tuple(spec.x_shape), tuple(spec.out_shape)
        H, W = spec.height, spec.width
        SH, SW = spec.stride
        PT, PL = spec.padding[0], spec.padding[1]
        DH, DW = spec.dilation
        CG, OG = spec.group_in, spec.group_out
    TH = min(THREADS, -(-NP // 32) * 32)
    NCH = -(-NP // TH)
    NBLK = NI * O * NCH
    blocks = (functools.partial(T.thread_binding, thread="blockIdx.x") if gpu else T.serial)
    threads = (functools.partial(T.thread_binding, thread="threadIdx.x") if gpu else T.serial)
    scope = "local" if gpu else "global"

    def x_at(X, n, o, p, t):
        if dense:
            return X[p, t]
        c = tirx.shift_right(t, CUDA_TERM_C_SHIFT)
        kh = tirx.bitwise_and(tirx.shift_right(t, CUDA_TERM_KH_SHIFT), 255)
        kw = tirx.bitwise_and(t, 255)
        ih = (p // OW) * SH - PT + kh * DH
        iw = (p % OW) * SW - PL + kw * DW
        inside = tirx.all(ih >= 0, ih < H, iw >= 0, iw < W)
        return tirx.if_then_else(inside, X[n, (o // OG) * CG + c, ih, iw], 0)

    def out_index(n, o, p):
        return [p, o] if dense else [n, o, p // OW, p % OW]

    @T.prim_func(private=True)
    def stst_cuda(X: T.Buffer(x_shape, "int32"), seg_ptr: T.Buffer((O + 1,), "int32"),
                  seg_level: T.Buffer((n_seg,), "int32"), seg_npos: T.Buffer((n_seg,), "int32"),
                  seg_tptr: T.Buffer((n_seg + 1,), "int32"), term: T.Buffer((n_term,), "int32"),
                  bias: T.Buffer((O,), "float32"), out: T.Buffer(out_shape, "float32")):
        T.func_attr({"tir.noalias": True})
        for bx in blocks(NBLK):
            for tx in threads(TH):
                acc_r = T.alloc_buffer((1,), acc, scope=scope)
                seg_r = T.alloc_buffer((1,), lane, scope=scope)
                n = T.meta_var(bx // (O * NCH))
                o = T.meta_var((bx // NCH) % O)
                p = T.meta_var((bx % NCH) * TH + tx)
                if p < NP:
                    acc_r[0] = T.Cast(acc, 0)
                    for si in range(seg_ptr[o + 1] - seg_ptr[o]):
                        seg_r[0] = T.Cast(lane, 0)
                        for ti in range(seg_npos[seg_ptr[o] + si]):
                            seg_r[0] = seg_r[0] + T.Cast(lane, x_at(X, n, o, p, term[seg_tptr[seg_ptr[o] + si] + ti]))
                        for ti in range(seg_tptr[seg_ptr[o] + si + 1] - seg_tptr[seg_ptr[o] + si]
                                        - seg_npos[seg_ptr[o] + si]):
                            seg_r[0] = seg_r[0] - T.Cast(lane, x_at(
                                X, n, o, p, term[seg_tptr[seg_ptr[o] + si] + seg_npos[seg_ptr[o] + si] + ti]))
                        acc_r[0] = acc_r[0] + T.shift_left(T.Cast(acc, seg_r[0]),
                                                           T.Cast(acc, seg_level[seg_ptr[o] + si]))
                    T.buffer_store(out, _epilogue(acc_r[0], bias[o] if has_bias else None, spec, exact),
                                   out_index(n, o, p))

    prim = stst_cuda if has_bias else _drop_param(stst_cuda, "bias")
    return prim, NBLK, TH
