"""Sum-then-shift shift kernels (TensorIR): adds of activation vectors, one shift per segment per output.

Entry point::

    k = build(kind, spec, codes, target, act_bits=(I, F))   # -> SumThenShiftKernel
    # k.pack:  PrimFunc (X_q int32 in the spec's layout) -> packed activations (k.packed_shape, k.lane_dtype)
    # k.pack_float(rounding, qmax): the same from the float32 input, quantising on the way (what compiled
    #          models run: no quantise kernel, no int32 x_q tensor)
    # k.main:  PrimFunc (packed, *k.weight_inputs, [bias f32 (O,)]) -> out f32 (spec.out_shape)
    # k.weight_inputs == k.derive(codes): int32 arrays rebuilt from the int8 codes at load time

``kind`` is ``"conv2d"`` (any stride / padding / dilation / groups; depthwise specs get their own kernel,
:func:`is_depthwise`) or ``"dense"`` (``DenseSpec``; runs the conv kernel over the batch as a 1 x M image). ``codes`` are the PyTorch-layout int8 codes
``sign * (shift - s0 + 1)`` (``schedules.compute.weight_codes``): ``(O, C/G, KH, KW)`` or ``(N, K)``.

Numerics: equal to ``shiftcomp.reference`` bit for bit (``acc`` exact in ``spec.acc_dtype``, then
``float32(acc) * 2**(s0-F) [+ bias]`` with :func:`schedules.compute._epilogue`, the epilogue of the other
kernels). Bounds: :mod:`schedules.segments`.

**Activation layout (the pre-kernel ``pack``).** Defined, with the plan arrays' ``derive_*`` functions, in the
numpy-only :mod:`schedules.sum_then_shift_layout` (re-exported here). Output pixels of one image form one flat
vector axis ``p = oh * RL + ow`` (``RL`` = row length, :func:`conv_rows`), so every term of the sum reads a
contiguous run of activations at a fixed offset from ``p``. The pack writes, per image, *copies* of the zero-padded
input, ``copy (cs, a)[c, r, j] = x_pad[c, r * sh + a, j * sw + cs]`` for ``r < OH + ((KH-1)*dh)//sh``,
``j < RL``, planes rounded up to a cache line (the conv kernel's to an odd number of lines,
:func:`~schedules.sum_then_shift_layout.odd_line_plane`, so the rows a pixel block reads from every plane
spread over all L1 sets), then a zero tail (tail blocks read past the last plane;
depthwise zero weights point there). Two forms (:func:`conv_rows`; the conv kernel with vectors of a cache
line takes tap copies first, :func:`aligned_taps`, so that no term's load splits a line):

* *halo* (else preferred): ``RL = OW + ((KW-1)*dw)//sw`` rounded up to the vector lanes, one copy per stride phase
  (``cs = (kw*dw) % sw``, ``a = (kh*dh) % sh``): tap ``(c, kh, kw)`` is at ``base(cs, a) + c * plane +
  ((kh*dh)//sh) * RL + (kw*dw)//sw``. About 1x the input; the input rows of a pixel block fit L1. Used when
  the garbage columns ``OW .. RL-1`` cost <= 1/6 more work (OW = 14, 28, 56, 112, ...);
* *tap copies*: one copy per column tap (``cs = kw*dw``) and row phase, ``RL = OW`` (or ``OW`` rounded up
  under the same 1/6 rule): tap offset ``base(kw*dw, a) + c * plane + ((kh*dh)//sh) * RL``. ``KW`` x the
  input, no halo columns: small images (OW = 4, 8, 16, 32) waste nothing.

With ``RL % lanes == 0`` a vector lies in one output row and is stored whole or in part (``ow < OW``); with
``RL == OW`` output pixels are NCHW-contiguous and stored as plain vectors.

**The pack loops** (:func:`_pack_primfunc`). Everything but the (image, channel) task index is static: the
copy list is unrolled in Python, and per copy the packed rows / columns whose source lies inside the image
are constants, so a packed row is ``zeros | copied run | zeros`` without any per-element condition or index
select. Loop order: task (parallel) -> row ranges (cut where some copy starts or stops reading the image) ->
row -> copies, so one task reads its input plane once, top to bottom. A copied run is whole vectors
(vector width of the lane dtype, then halves down to 4, then scalars; no element written twice): stride 1
one contiguous load per vector; stride ``sw`` one load of ``sw x lanes`` contiguous elements de-interleaved
by a shuffle (the load is shifted back by ``sw - 1`` where it would run past the row's end). Zero halo
columns, zero rows, plane gaps and the image's zero tail are vector stores of zeros. With ``quant`` (see
:meth:`SumThenShiftKernel.pack_float`) the run converts each loaded vector with
:func:`schedules.compute.quantize_value` -- the quantise kernel's expression -- before narrowing it to the
lane dtype: one ``x * 2**F`` per copied element (the audit's prologue multiplies).

**Kernel (conv / dense batch > 1).** Per (image, block of ``VB`` pixels, output channel)::

    acc[VB] (acc dtype) = 0
    for each segment s of the channel:          # one level, <= capacity terms, positives first
        sacc[VB] (lane dtype) = 0
        for each + term: sacc += packed[off[t] + p]      # vpaddw with a memory operand
        for each - term: sacc -= packed[off[t] + p]      # vpsubw
        acc += widen(sacc) << level[s]                     # one shift per segment per output
    out = float32(acc) * 2**(s0 - F) [+ bias]

With :func:`default_k_tiles` > 1 input-channel tiles (wide convs on small images, whose activations for a pixel
block do not fit L1), the plan has one row per (tile, output) and the task loops tile -> output channel ->
segments, parking each output's ``acc`` between tiles: every output of the task reads one tile while it is in
L1. ``VB = NV x VW``: ``VW`` lanes of the target's vector width (AVX-512 32 int16, AVX2 16, NEON 8; halved for
small images where that saves a quarter of the padded lanes, :func:`_pixel_lanes`) unrolled ``NV`` times
(one vector of 80 lanes gets scalarised by LLVM; 4-5 registers keep the loads busy). Buffers are
``scope="global"`` allocations (LLVM stack -> registers for the < 1 KiB ones; ``local`` would be a heap
workspace on CPU). Every loop starts at 0 (:data:`CANONICALIZE_LOOP_WORKAROUND`).

``out`` is float32 NCHW after the fused :class:`~schedules.epilogue.Epilogue`, or -- ``main_with(epilogue,
packed)`` -- the next sum-then-shift kernel's packed input: each value quantised once with that kernel's
pack expression and stored at a constant offset in each of its copies, then the zero regions of that layout
written after the main loop (:mod:`schedules.packed_store`).

**Depthwise** (``Cg == Og == 1``): per channel a fixed, unrolled list of ``KH*KW`` taps, each
``acc += ((widen(x) << level) ^ neg) - neg`` (``neg`` = 0 / -1); zero weights read the zero tail.

**Dense at batch 1 (GEMV)** runs the same kernel over one pixel (one vector, mostly idle lanes): it is
correct but slow; ``experiments/bench_sum_then_shift.py`` measures it against the column-block kernel of
``schedules.build_shift_kernel("dense", ...)``. Batch 1 gets ``schedules.table_gemv`` on x86 (see
``schedules/README.md``), else the column-block kernel.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tvm
from tvm import tirx
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as Tb

from .compute import Conv2dSpec, DenseSpec, _epilogue, cast_lanes, needs_exact_scale, quantize_value
from .epilogue import Epilogue
from .packed_store import PackedStore, column_shifts, copy_offsets, zero_runs
from .segments import LANE_BITS, lane_dtype_for
from .sum_then_shift_layout import (ActivationLayout, conv_layout, conv_rows, dense_layout, derive_conv2d_inputs,
                                    derive_depthwise_inputs, derive_dense_inputs, is_depthwise,
                                    layout_orders_differ, pack_numpy)
from .sum_then_shift_layout import round_up as _round_up
from .target import has_feature, l1d_bytes, resolve_target

__all__ = ["build", "SumThenShiftKernel", "ActivationLayout", "conv_layout", "dense_layout", "is_depthwise",
           "vector_bits", "conv_rows", "layout_orders_differ", "derive_conv2d_inputs", "derive_depthwise_inputs",
           "derive_dense_inputs",
           "pack_numpy", "CANONICALIZE_LOOP_WORKAROUND", "KINDS", "default_k_tiles", "segment_lane_dtype",
           "TILE_L1_SHARE", "MIN_TILE_CHANNELS", "TILE_MIN_OVERFLOW", "aligned_taps", "CACHE_LINE_BITS"]

KINDS = ("conv2d", "dense")

#: TVM 0.27's ``s_tir.CanonicalizeLoop`` rewrites ``for s in range(a, b)`` into ``range(b - a)`` without
#: substituting ``s`` in the bounds of nested loops (silently wrong code). The kernels therefore write every
#: loop as ``range(0, n)`` with explicit offsets; ``tests/schedules/test_sum_then_shift.py`` pins the bug.
CANONICALIZE_LOOP_WORKAROUND = True

#: pixel vectors per block (unrolled): enough independent loads per term, accumulators within the registers
BLOCK_VECTORS = 4
#: with 32 vector registers (AVX-512), an image of more than BLOCK_VECTORS but at most this many vectors, not a
#: multiple of BLOCK_VECTORS, is one block: 14 x 14 outputs in rows of 16 are 7 vectors of 32 lanes, which
#: blocks of 4 would compute as 8; the 7 int16 sums and 14 int32 accumulators still fit the registers
WHOLE_IMAGE_VECTORS = 7
#: with at most PAD_MAX_VECTORS vectors per pixel block, every segment's positive and negative runs are padded
#: to a multiple of TERM_MULTIPLE terms (reading zeros): the term loop then has no remainder loop, whose exit
#: the branch predictor misses once per run. Wider blocks keep exact runs (their padding would cost more adds
#: than the exits).
TERM_MULTIPLE = 4
PAD_MAX_VECTORS = 2

#: share of the L1 data cache (:func:`schedules.target.l1d_bytes`) that the activations of one input-channel
#: tile of a pixel block may span: every output of a task's chunk reads the whole tile, so it stays in L1
TILE_L1_SHARE = 5 / 6
#: fewer input channels per tile than this, per row phase of the stride, cost more in extra segments than the
#: L1 hits gain (``--k-tiles`` in ``experiments/bench_sum_then_shift.py``; stride-2 convs measured best with
#: twice as many channels a tile, BENCHMARKS.md)
MIN_TILE_CHANNELS = 16
#: tile (at least in two) once the activations exceed this fraction of that share: a pixel block's span just
#: under the share still loses lines to the term lists streaming through L1, more so on a 32 KiB L1d
TILE_MIN_OVERFLOW = 0.8
#: a cache line: vectors this wide read aligned tap copies (:func:`aligned_taps`); conv planes span an odd
#: number of lines
CACHE_LINE_BITS = 512


def vector_bits(target: tvm.target.Target) -> int:
    """SIMD register width the kernels vectorise for: 512 (AVX-512BW), 256 (AVX2), else 128 (SSE/NEON/...)."""
    if has_feature(target, "avx512bw"):
        return 512
    if has_feature(target, "avx2"):
        return 256
    return 128


def _chunks(n: int, vl: int) -> Tuple[int, List[Tuple[int, int]], int]:
    """Cover ``n`` contiguous elements with vectors: ``(full, extra, scalar)``: ``full`` vectors of ``vl``
    lanes at ``k * vl``, then ``extra`` narrower vectors ``(start, lanes)`` (halving, at least 4 lanes), then
    ``scalar`` single elements at the end. No element is written twice (the audit counts every lane)."""
    full, rest = divmod(n, vl)
    extra, at, w = [], full * vl, vl // 2
    while w >= 4:
        if rest >= w:
            extra.append((at, w))
            at, rest = at + w, rest - w
        w //= 2
    return full, extra, rest


def _pack_primfunc(layout: ActivationLayout, x_shape: Tuple[int, ...], lane: str, vbits: int = 128,
                   quant: Optional[Tuple[int, int, str, Optional[int]]] = None) -> tirx.PrimFunc:
    """The pre-kernel: ``X`` (NCHW, or ``(M, K)`` for dense) -> packed ``lane`` activations.

    ``quant=None``: ``X`` is the int32 ``x_q``. ``quant=(I, F, rounding, qmax)``: ``X`` is the float32 input
    and the pack quantises it on the way (:func:`schedules.compute.quantize_value`, the quantise kernel's
    expression: one ``x * 2**F`` per element read). ``vbits``: the target's vector width (:func:`vector_bits`);
    copied runs and zero runs are vectors of ``vbits`` bits of the lane dtype."""
    NI, IL, PL = layout.images, layout.image_len, layout.plane
    zoff, ztail = layout.zero_offset, layout.tail
    xdtype = "int32" if quant is None else "float32"
    vl = max(4, int(vbits) // LANE_BITS[lane])

    def value(v: tirx.PrimExpr) -> tirx.PrimExpr:
        if quant is not None:
            v = quantize_value(v, *quant)
        return cast_lanes(v, lane)

    zeros = functools.partial(_zeros, vl=vl, lane=lane)

    with IRBuilder() as ib, Tb.prim_func():
        Tb.func_name("pack")
        Tb.func_attr({"tir.noalias": True})
        X = Tb.arg("X", Tb.Buffer(tuple(int(d) for d in x_shape), xdtype))
        P = Tb.arg("P", Tb.Buffer((NI * IL,), lane))
        if layout.transpose_dense:
            M, K = x_shape
            with Tb.parallel(0, K) as k:
                with Tb.serial(0, M) as m:
                    Tb.buffer_store(P, value(X[m, k]), [k * PL + m])
                zeros(P, k * PL + M, PL - M)
            zeros(P, zoff, ztail)
        else:
            _pack_conv_body(layout, X, P, vl, value, zeros)
    return ib.get()


def _zeros(P, start, count: int, vl: int, lane: str) -> None:
    """``P[start : start + count] = 0`` as vector stores of ``vl`` lanes (``count`` static)."""
    full, extra, scalar = _chunks(count, vl)
    if full:
        with Tb.serial(0, full) as k:
            Tb.buffer_store(P, tirx.Broadcast(tirx.const(0, lane), vl), [tirx.Ramp(start + k * vl, 1, vl)])
    for s, w in extra:
        Tb.buffer_store(P, tirx.Broadcast(tirx.const(0, lane), w), [tirx.Ramp(start + s, 1, w)])
    if scalar:
        with Tb.serial(0, scalar) as k:
            Tb.buffer_store(P, tirx.const(0, lane), [start + count - scalar + k])


def _pack_conv_body(layout: ActivationLayout, X, P, vl: int, value, zeros) -> None:
    """Conv pack loops (module doc, "The pack loops"): per (image, channel) task and packed row, every copy
    (static list, unrolled here) as zero columns / copied run / zero columns or a zero row, then the plane
    gaps and (first channel) the image's zero tail. A copied run loads whole vectors of ``x`` (stride ``sw``:
    ``sw * lanes`` contiguous elements, de-interleaved by a shuffle), so no per-element index arithmetic or
    condition is left."""
    N, IL, C, PL, R, RL = layout.images, layout.image_len, layout.channels, layout.plane, layout.rows, layout.row_len
    sh, sw = layout.stride
    pt, pl = layout.pad_tl
    H, W = layout.in_hw

    def run(base, xrow, lo, hi, cs, n_, c_):
        """``P[base + j] = value(x[n, c, xrow, j * sw + cs - pl])`` for ``lo <= j < hi``."""
        def src(j0):
            return j0 * sw + cs - pl

        def vec(j0, w):
            """``w`` lanes from column ``j0`` as one load (+ de-interleave), or ``None`` when no load of
            whole vectors stays inside the row (tiny images; ``j0`` static then)."""
            s = src(j0)
            if sw == 1:
                return X[n_, c_, xrow, tirx.Ramp(s, 1, w)]
            if not isinstance(s, int) or s + sw * w - 1 <= W - 1:
                v = X[n_, c_, xrow, tirx.Ramp(s, 1, sw * w)]
                return tirx.Shuffle([v], [q * sw for q in range(w)])
            if s - (sw - 1) >= 0:       # the load would run past the row: load the lanes ending on the last one
                v = X[n_, c_, xrow, tirx.Ramp(s - (sw - 1), 1, sw * w)]
                return tirx.Shuffle([v], [sw - 1 + q * sw for q in range(w)])
            return None

        def store(j0, w):
            v = vec(j0, w)
            if v is None:
                with Tb.serial(0, w) as q:
                    Tb.buffer_store(P, value(X[n_, c_, xrow, src(j0 + q)]), [base + j0 + q])
            else:
                Tb.buffer_store(P, value(v), [tirx.Ramp(base + j0, 1, w)])

        full, extra, scalar = _chunks(hi - lo, vl)
        # full vectors but the last read within the row; the last one is checked statically in vec()
        if full > 1:
            with Tb.serial(0, full - 1) as k:
                Tb.buffer_store(P, value(vec(lo + k * vl, vl)), [tirx.Ramp(base + lo + k * vl, 1, vl)])
        if full:
            store(lo + (full - 1) * vl, vl)
        for s0, w in extra:
            store(lo + s0, w)
        if scalar:
            with Tb.serial(0, scalar) as q:
                Tb.buffer_store(P, value(X[n_, c_, xrow, src(hi - scalar + q)]), [base + hi - scalar + q])

    # per copy: packed rows [r_lo, r_hi) have their source row inside the image, packed columns [lo, hi) theirs
    geo = []
    for cs, a in layout.copies:
        r_lo = min(R, max(0, -(-(pt - a) // sh)))
        r_hi = min(R, max(r_lo, (H - 1 + pt - a) // sh + 1))
        lo = min(RL, max(0, -(-(pl - cs) // sw)))
        hi = min(RL, max(lo, (W - 1 + pl - cs) // sw + 1))
        geo.append((cs, a, r_lo, r_hi, lo, hi))
    # rows outer, copies inner: the input plane is read top to bottom once (the copies of one packed row read
    # the same or neighbouring input rows), which the prefetchers follow; row ranges in which every copy
    # is either copied or zero are separate loops, so no condition is left per row
    cuts = sorted({0, R} | {g[2] for g in geo} | {g[3] for g in geo})
    with Tb.parallel(0, N * C) as t:
        n_, c_ = t // C, t % C
        for r0, r1 in itertools.pairwise(cuts):
            with Tb.serial(0, r1 - r0) as rr:
                for i, (cs, a, r_lo, r_hi, lo, hi) in enumerate(geo):
                    rbase = n_ * IL + (i * C + c_) * PL + (rr + r0) * RL
                    if r_lo <= r0 and r1 <= r_hi:
                        zeros(P, rbase, lo)
                        run(rbase, (rr + r0) * sh + a - pt, lo, hi, cs, n_, c_)
                        zeros(P, rbase + hi, RL - hi)
                    else:
                        zeros(P, rbase, RL)
        for i in range(len(geo)):
            zeros(P, n_ * IL + (i * C + c_) * PL + R * RL, PL - R * RL)
        with Tb.If(c_ == 0), Tb.Then():
            zeros(P, n_ * IL + layout.zero_offset, layout.tail)


# ----------------------------------------------------------------------------------------------- kernels
def _lanes(target: tvm.target.Target, dtype: str) -> int:
    return max(1, vector_bits(target) // LANE_BITS[dtype])


def aligned_taps(kind: str, vw: int, lane: str, taps: Optional[bool] = None) -> bool:
    """Whether the conv kernel reads the tap-copy layout first (``conv_rows(taps=True)``; ``taps`` forces the
    answer for a conv, as :func:`build`'s argument does; never for depthwise or dense). With vectors of a
    whole cache line, a load at a column tap that is not a multiple of the lanes splits a line *every* time,
    so each tap gets its own row-aligned copy (and input-channel tiles keep the ``KW`` x larger block in
    L1). Narrower vectors split only some of those loads, and the halo layout's smaller footprint wins
    there (``experiments/bench_sum_then_shift.py``, AVX2 code: conv 64->64@56 equal or slower with taps)."""
    if kind != "conv2d":
        return False
    return vw * LANE_BITS[lane] >= CACHE_LINE_BITS if taps is None else bool(taps)


def _pixels(kind: str, spec: Union[Conv2dSpec, DenseSpec], vw: int, lane: str, taps: Optional[bool] = None) -> int:
    """Output pixels per image the conv / dense kernel computes with ``vw``-lane vectors (garbage columns of
    padded rows included)."""
    if kind == "dense":
        return spec.batch
    return spec.out_hw[0] * conv_rows(spec, vw, aligned_taps(kind, vw, lane, taps))[0]


def _pixel_lanes(kind: str, spec: Union[Conv2dSpec, DenseSpec], full: int, lane: str,
                 taps: Optional[bool] = None) -> int:
    """Lanes per vector: the target's ``full`` width, halved (down to 8 lanes) while that cuts the padded
    pixels of an image by at least a quarter -- e.g. a 4x4 output is one 16-lane vector on AVX-512, not a
    half-empty 32-lane one; a narrower vector costs more instructions per lane, so smaller savings keep
    the full width."""
    best = full
    padded = _round_up(_pixels(kind, spec, full, lane, taps), full)
    w = full // 2
    while w >= 8:
        p = _round_up(_pixels(kind, spec, w, lane, taps), w)
        if 4 * p <= 3 * padded:
            best, padded = w, p
        w //= 2
    return best


def _block(n_pixels: int, vw: int, max_vectors: int = BLOCK_VECTORS, whole: int = 0) -> Tuple[int, int]:
    """``(NV, VB)``: vectors per pixel block and block width for ``n_pixels`` outputs of ``vw`` lanes; an image
    of up to ``whole`` vectors that blocks of ``max_vectors`` would pad is one block (:data:`WHOLE_IMAGE_VECTORS`)."""
    total = -(-n_pixels // vw)
    nv = total if max_vectors < total <= whole and total % max_vectors else max(1, min(int(max_vectors), total))
    return nv, nv * vw


def _whole_image_vectors(tgt: tvm.target.Target, lane: str, acc: str) -> int:
    """The ``whole`` of :func:`_block` for the conv / dense kernel: :data:`WHOLE_IMAGE_VECTORS` where each
    vector of sums needs at most three registers (its lanes, and an accumulator twice as wide) out of 32."""
    return WHOLE_IMAGE_VECTORS if vector_bits(tgt) == 512 and LANE_BITS[acc] <= 2 * LANE_BITS[lane] else 0


def _stst_primfunc(spec: Union[Conv2dSpec, DenseSpec], layout: ActivationLayout, lane: str, acc: str,
                   vw: int, nv: int, epilogue: Epilogue = Epilogue(),
                   packed: Optional[PackedStore] = None, kt: int = 1, tm: int = 1) -> tirx.PrimFunc:
    """The sum-then-shift kernel (see module doc) for a conv spec or a dense spec at batch > 1.

    The plan buffers have symbolic lengths (``n_seg``, ``n_term``), so one PrimFunc serves every weight
    tensor of the spec; the shapes bind from the arrays passed in. ``packed``: store the output quantised
    into the next kernel's packed layout instead of float32 NCHW (:mod:`schedules.packed_store`; conv specs
    whose :func:`~schedules.packed_store.copy_offsets` are not None). ``kt``: input-channel tiles of the plan
    (:func:`~schedules.sum_then_shift_layout.derive_conv2d_inputs`): a task sums every output of its chunk over
    one tile before the next, keeping one accumulator block per output."""
    n_seg = tirx.Var("n_seg", "int32")
    n_term = tirx.Var("n_term", "int32")
    dense = isinstance(spec, DenseSpec)
    O = spec.out_features if dense else spec.out_channels
    NI, IL = layout.images, layout.image_len
    OH, OW = (1, 1) if dense else spec.out_hw
    RL = layout.row_len
    PADDED = layout.padded_rows                              # rows of RL pixels, the last RL - OW not stored
    NP = spec.batch if dense else OH * RL
    VB = nv * vw
    NB = -(-NP // VB)
    NBF = NP // VB                                           # full blocks (plain vector stores)
    out_shape = tuple(int(d) for d in spec.out_shape)
    has_bias = bool(spec.has_bias)
    exact = needs_exact_scale(spec)
    NEC = max(1, epilogue.table_rows)
    offsets = None
    if packed is not None:
        offsets = None if dense else copy_offsets(out_shape, RL, packed)
        if offsets is None:
            raise ValueError(f"cannot store {spec} into the packed layout {packed.layout}")
    PACKED = offsets is not None
    shifts = column_shifts(offsets, packed.layout) if PACKED else ()
    edge_runs = zero_runs(offsets, packed.layout, NP) if PACKED else ()
    OUT_SHAPE, OUT_DTYPE = ((packed.length,), packed.lane) if PACKED else (out_shape, "float32")
    QV = VB if PACKED else 1
    # tasks: (image, pixel block); with too few of them, output-channel chunks as well (parallel balance)
    OC = 1 if NI * NB >= 8 else min(O, 8)
    CS = -(-O // OC)
    KT = max(1, int(kt))
    TILED = KT > 1
    # tiles: each output of the chunk parks its accumulator block here between tiles (in registers within one)
    NPARK = CS * VB if TILED else 1
    TM = max(1, int(tm))

    def epi(a, b):
        return _epilogue(a, b, spec, exact)

    def store(out, n, co, p, val, ep_c, ep_r, qv, qi):
        idx = [p, co] if dense else [n, co, p // OW, p % OW]
        if not PACKED:
            return _put(out, idx, val, epilogue, ep_c, ep_r)
        # quantised once into a register-sized staging buffer, then one store per copy of the next layout
        v = epilogue.apply(val, ep_c, ep_r, co, idx)
        T.buffer_store(qv, cast_lanes(quantize_value(v, *packed.act_bits, packed.rounding, packed.qmax),
                                      packed.lane), [qi])
        lay = packed.layout
        for i, (d, sh) in enumerate(zip(offsets, shifts)):
            # Select, not if_then_else: TVM scalarises an if_then_else whose condition varies across lanes,
            # and LLVM re-vectorises the scalar stores in 16/8/4/2/1-lane pieces
            q = qv[qi]
            if sh > 0:      # the last columns land in the next row's left zero columns
                q = T.Select(p % OW < OW - sh, q, T.Cast(packed.lane, 0))
            elif sh < 0:    # the first columns land in the previous row's right zero columns
                q = T.Select(p % OW >= -sh, q, T.Cast(packed.lane, 0))
            T.buffer_store(out, q, [n * lay.image_len + (i * O + co) * lay.plane + d + p])
        return None

    def edge_zeros(out, n, co, blk):
        """What no store of the next kernel's layout writes (:func:`~schedules.packed_store.zero_runs`): the
        rows before a plane's stored run, by the task of the image's first pixel block, and after it (and the
        image's tail), by the task of its last, right after their own stores to the same lines."""
        lay = packed.layout
        zeros = functools.partial(_zeros, vl=max(4, vw * LANE_BITS[lane] // LANE_BITS[packed.lane]),
                                  lane=packed.lane)
        for edge, side in ((0, 0), (NB - 1, 1)):
            with Tb.If(blk == edge), Tb.Then():
                for i, both in enumerate(edge_runs):
                    a, cnt = both[side]
                    if cnt:
                        zeros(out, n * lay.image_len + (i * O + co) * lay.plane + a, cnt)
                if side == 1:
                    with Tb.If(co == 0), Tb.Then():
                        zeros(out, n * lay.image_len + lay.zero_offset, lay.tail)

    def bias_at(b, i):
        return b[i] if has_bias else None

    @T.prim_func
    def stst(xp: T.Buffer((NI * IL,), lane), seg_ptr: T.Buffer((KT * O + 1,), "int32"),
             seg_level: T.Buffer((n_seg,), "int32"), seg_npos: T.Buffer((n_seg,), "int32"),
             seg_tptr: T.Buffer((n_seg + 1,), "int32"), toff: T.Buffer((n_term,), "int32"),
             bias: T.Buffer((O,), "float32"), ep_c: T.Buffer((NEC, O), "float32"),
             ep_r: T.Buffer(out_shape, "float32"), out: T.Buffer(OUT_SHAPE, OUT_DTYPE)):
        T.func_attr({"tir.noalias": True})
        for task in T.parallel(NI * NB * OC):
            park = T.alloc_buffer((NPARK,), acc, scope="global")
            for t, cj in T.grid(KT, CS):
                if (task % OC) * CS + cj < O:
                    ROW = T.meta_var(t * O + (task % OC) * CS + cj)       # the plan row: (tile, output)
                    acc_v = T.alloc_buffer((VB,), acc, scope="global")
                    sacc = T.alloc_buffer((VB,), lane, scope="global")
                    qv = T.alloc_buffer((QV,), OUT_DTYPE, scope="global")
                    if TILED:
                        for v in T.unroll(nv):
                            for q in T.vectorized(vw):
                                acc_v[v * vw + q] = T.if_then_else(t == 0, T.Cast(acc, 0), park[cj * VB + v * vw + q])
                    else:
                        for v in T.unroll(nv):
                            for q in T.vectorized(vw):
                                acc_v[v * vw + q] = T.Cast(acc, 0)
                    for si in range(seg_ptr[ROW + 1] - seg_ptr[ROW]):
                        for v in T.unroll(nv):
                            for q in T.vectorized(vw):
                                sacc[v * vw + q] = T.Cast(lane, 0)
                        # runs padded to TM terms: no remainder loop (one loop exit per run)
                        for tq in range(seg_npos[seg_ptr[ROW] + si] // TM):
                            for u in T.unroll(TM):
                                for v in T.unroll(nv):
                                    for q in T.vectorized(vw):
                                        sacc[v * vw + q] = sacc[v * vw + q] + xp[
                                            (task // (NB * OC)) * IL
                                            + toff[seg_tptr[seg_ptr[ROW] + si] + tq * TM + u]
                                            + ((task // OC) % NB) * VB + v * vw + q]
                        for tq in range((seg_tptr[seg_ptr[ROW] + si + 1]
                                         - seg_tptr[seg_ptr[ROW] + si]
                                         - seg_npos[seg_ptr[ROW] + si]) // TM):
                            for u in T.unroll(TM):
                                for v in T.unroll(nv):
                                    for q in T.vectorized(vw):
                                        sacc[v * vw + q] = sacc[v * vw + q] - xp[
                                            (task // (NB * OC)) * IL
                                            + toff[seg_tptr[seg_ptr[ROW] + si]
                                                   + seg_npos[seg_ptr[ROW] + si] + tq * TM + u]
                                            + ((task // OC) % NB) * VB + v * vw + q]
                        for v in T.unroll(nv):
                            for q in T.vectorized(vw):
                                acc_v[v * vw + q] = acc_v[v * vw + q] + T.shift_left(
                                    T.Cast(acc, sacc[v * vw + q]),
                                    T.Cast(acc, seg_level[seg_ptr[ROW] + si]))
                    if TILED:
                        if t < KT - 1:
                            for v in T.unroll(nv):
                                for q in T.vectorized(vw):
                                    park[cj * VB + v * vw + q] = acc_v[v * vw + q]
                    if t == KT - 1:
                        if PADDED:                   # a vector lies in one row (RL % vw == 0): store its valid part
                            for v in T.unroll(nv):
                                p0 = T.meta_var(((task // OC) % NB) * VB + v * vw)
                                if p0 % RL + vw <= OW and p0 // RL < OH:
                                    for q in T.vectorized(vw):
                                        _put(out, [task // (NB * OC), (task % OC) * CS + cj, p0 // RL, p0 % RL + q],
                                             epi(acc_v[v * vw + q], bias_at(bias, (task % OC) * CS + cj)),
                                             epilogue, ep_c, ep_r)
                                else:
                                    for q in range(vw):
                                        if (p0 + q) % RL < OW and (p0 + q) // RL < OH:
                                            _put(out, [task // (NB * OC), (task % OC) * CS + cj, (p0 + q) // RL,
                                                       (p0 + q) % RL],
                                                 epi(acc_v[v * vw + q], bias_at(bias, (task % OC) * CS + cj)),
                                                 epilogue, ep_c, ep_r)
                        elif (task // OC) % NB < NBF:
                            for v in T.unroll(nv):
                                for q in T.vectorized(vw):
                                    store(out, task // (NB * OC), (task % OC) * CS + cj,
                                          ((task // OC) % NB) * VB + v * vw + q,
                                          epi(acc_v[v * vw + q], bias_at(bias, (task % OC) * CS + cj)), ep_c, ep_r,
                                          qv, v * vw + q)
                        else:
                            for v in range(VB):
                                if ((task // OC) % NB) * VB + v < NP:
                                    store(out, task // (NB * OC), (task % OC) * CS + cj, ((task // OC) % NB) * VB + v,
                                          epi(acc_v[v], bias_at(bias, (task % OC) * CS + cj)), ep_c, ep_r, qv, v)
                        if PACKED:
                            edge_zeros(out, task // (NB * OC), (task % OC) * CS + cj, (task // OC) % NB)

    return _drop_unused(stst, has_bias, epilogue)


def _dw_primfunc(spec: Conv2dSpec, layout: ActivationLayout, lane: str, acc: str, vw: int, nv: int,
                 epilogue: Epilogue = Epilogue()) -> tirx.PrimFunc:
    """The depthwise kernel (see module doc)."""
    C = spec.out_channels
    NTAP = spec.kernel_h * spec.kernel_w
    NI, IL = layout.images, layout.image_len
    OH, OW = spec.out_hw
    RL = layout.row_len
    PADDED = layout.padded_rows
    NP = OH * RL
    VB = nv * vw
    NB = -(-NP // VB)
    NBF = NP // VB
    out_shape = tuple(int(d) for d in spec.out_shape)
    has_bias = bool(spec.has_bias)
    exact = needs_exact_scale(spec)
    zero = tirx.const(0, acc)
    NEC = max(1, epilogue.table_rows)

    def epi(a, b):
        return _epilogue(a, b, spec, exact)

    def bias_at(b, i):
        return b[i] if has_bias else None

    @T.prim_func
    def dw(xp: T.Buffer((NI * IL,), lane), toff: T.Buffer((C, NTAP), "int32"), lvl: T.Buffer((C, NTAP), "int32"),
           neg: T.Buffer((C, NTAP), "int32"), bias: T.Buffer((C,), "float32"), ep_c: T.Buffer((NEC, C), "float32"),
           ep_r: T.Buffer(out_shape, "float32"), out: T.Buffer(out_shape, "float32")):
        T.func_attr({"tir.noalias": True})
        for task in T.parallel(NI * C):
            for pb in range(NB):
                acc_v = T.alloc_buffer((VB,), acc, scope="global")
                for v in T.unroll(nv):
                    for q in T.vectorized(vw):
                        acc_v[v * vw + q] = zero
                for t in T.unroll(NTAP):
                    for v in T.unroll(nv):
                        for q in T.vectorized(vw):
                            acc_v[v * vw + q] = acc_v[v * vw + q] + (
                                (T.shift_left(T.Cast(acc, xp[(task // C) * IL + toff[task % C, t] + pb * VB
                                                             + v * vw + q]),
                                              T.Cast(acc, lvl[task % C, t]))
                                 ^ T.Cast(acc, neg[task % C, t])) - T.Cast(acc, neg[task % C, t]))
                if PADDED:                       # a vector lies in one row (RL % vw == 0): store its valid part
                    for v in T.unroll(nv):
                        p0 = T.meta_var(pb * VB + v * vw)
                        if p0 % RL + vw <= OW and p0 // RL < OH:
                            for q in T.vectorized(vw):
                                _put(out, [task // C, task % C, p0 // RL, p0 % RL + q],
                                     epi(acc_v[v * vw + q], bias_at(bias, task % C)), epilogue, ep_c, ep_r)
                        else:
                            for q in range(vw):
                                if (p0 + q) % RL < OW and (p0 + q) // RL < OH:
                                    _put(out, [task // C, task % C, (p0 + q) // RL, (p0 + q) % RL],
                                         epi(acc_v[v * vw + q], bias_at(bias, task % C)), epilogue, ep_c, ep_r)
                elif pb < NBF:
                    for v in T.unroll(nv):
                        for q in T.vectorized(vw):
                            _put(out, [task // C, task % C, (pb * VB + v * vw + q) // OW, (pb * VB + v * vw + q) % OW],
                                 epi(acc_v[v * vw + q], bias_at(bias, task % C)), epilogue, ep_c, ep_r)
                else:
                    for v in range(VB):
                        if pb * VB + v < NP:
                            _put(out, [task // C, task % C, (pb * VB + v) // OW, (pb * VB + v) % OW],
                                 epi(acc_v[v], bias_at(bias, task % C)), epilogue, ep_c, ep_r)

    return _drop_unused(dw, has_bias, epilogue)


def _put(out: Any, index: List[Any], value: Any, epilogue: Epilogue, table: Any, tensor: Any) -> Any:
    """Store one output value after the epilogue's steps (the output channel is ``index[1]``: NCHW or
    ``(row, feature)``)."""
    return T.buffer_store(out, epilogue.apply(value, table, tensor, index[1], index), index)


def _drop_unused(prim: tirx.PrimFunc, has_bias: bool, epilogue: Epilogue) -> tirx.PrimFunc:
    """``prim`` without the parameters its bias and epilogue do not use: ``(..., [bias], [ep_c], [ep_r], out)``."""
    for name, used in (("bias", has_bias), ("ep_c", epilogue.table_rows > 0), ("ep_r", epilogue.has_tensor)):
        if not used:
            prim = _drop_param(prim, name)
    return prim


def _drop_param(prim: tirx.PrimFunc, name: str) -> tirx.PrimFunc:
    """``prim`` without the (unused) parameter ``name``."""
    keep = [p for p in prim.params if str(getattr(p, "name", "")) != name]
    return tirx.PrimFunc(keep, prim.body, prim.ret_type, prim.attrs)


# ----------------------------------------------------------------------------------------------- entry
@dataclasses.dataclass(frozen=True, eq=False)
class SumThenShiftKernel:
    """A built sum-then-shift kernel family instance.

    Attributes:
        kind: ``"conv2d"``, ``"depthwise"`` or ``"dense"``.
        spec: the spec it was built for.
        pack: pre-kernel PrimFunc ``(X_q int32 spec.x_shape, packed lane_dtype packed_shape)``.
        main: kernel PrimFunc ``(packed, *weight_inputs, [bias f32 (O,)], out f32 spec.out_shape)``.
        weight_inputs: int32 arrays derived from the codes (``derive(codes)`` rebuilds them).
        derive: ``codes -> weight_inputs`` (a ``functools.partial`` of a module-level ``derive_*``).
        lane_dtype: dtype of the packed activations and of the segment sums.
        packed_shape: shape of the packed activation buffer.
        layout: the :class:`ActivationLayout`.
        vector_lanes, block: lanes per vector and pixels per block the kernel was generated with.
        act_bits: the activation format ``(I, F)`` it was built for (:meth:`pack_float` quantises to it).
        tail: zero elements after the last packed image (the layout's tail; :meth:`main_with` rebuilds with it).
        odd_lines: elements per cache line when the planes span an odd number of lines (the conv kernel), else 0.
    """

    kind: str
    spec: Any
    pack: tirx.PrimFunc
    main: tirx.PrimFunc
    weight_inputs: Tuple[np.ndarray, ...]
    derive: Callable[[np.ndarray], List[np.ndarray]]
    lane_dtype: str
    packed_shape: Tuple[int, ...]
    layout: Optional[ActivationLayout]
    vector_lanes: int
    block: int
    target: tvm.target.Target
    act_bits: Tuple[int, int] = (0, 0)
    tail: int = 0
    k_tiles: int = 1
    term_multiple: int = 1
    taps: bool = False
    odd_lines: int = 0

    def main_with(self, epilogue: Epilogue, packed: Optional[PackedStore] = None) -> tirx.PrimFunc:
        """:attr:`main` with a fused :class:`~schedules.epilogue.Epilogue`: parameters ``(packed,
        *weight_inputs, [bias], [table f32 (K, O)], [tensor f32 spec.out_shape], out)``. With ``packed``
        (conv kernels, see :meth:`can_store_into`), ``out`` is the next kernel's packed input
        (``packed.lane``, ``(packed.length,)``) instead of float32 ``spec.out_shape``."""
        if not epilogue and packed is None:
            return self.main
        return _main_primfunc(self.kind, self.spec, self.lane_dtype, self.vector_lanes,
                              self.block // self.vector_lanes, self.tail, epilogue, packed, self.k_tiles,
                              self.term_multiple, self.taps, self.odd_lines)

    def can_store_into(self, packed: PackedStore) -> bool:
        """Whether :meth:`main_with` can store this kernel's output into ``packed`` (conv, not depthwise;
        geometry per :func:`schedules.packed_store.copy_offsets`)."""
        return self.kind == "conv2d" and copy_offsets(tuple(self.spec.out_shape), self.layout.row_len,
                                                      packed) is not None

    def packed_input(self, rounding: str, qmax: Optional[int] = None) -> PackedStore:
        """What :meth:`pack_float` writes (this kernel's packed input), for a producer that stores into it."""
        return PackedStore(self.layout, self.lane_dtype, self.act_bits, rounding, qmax)

    def pack_float(self, rounding: str, qmax: Optional[int] = None) -> tirx.PrimFunc:
        """The quantising pack: ``(x float32 spec.x_shape, packed)``, ``pack`` of ``clamp(round(x * 2**F))``
        in the kernel's ``Q(I, F)`` (:func:`schedules.compute.quantize_value`; ``rounding``/``qmax`` as
        there). It replaces a quantise kernel followed by ``pack``: no int32 tensor in between."""
        return _pack_primfunc(self.layout, tuple(int(d) for d in self.spec.x_shape), self.lane_dtype,
                              vector_bits(self.target), quant=(*self.act_bits, rounding, qmax))

    def compile(self) -> "CompiledSumThenShift":
        """Build both PrimFuncs for :attr:`target` (cached in process by kind, spec, lane dtype, target)."""
        return _compiled(self)

    def __call__(self, x_q: np.ndarray, bias: Optional[np.ndarray] = None) -> np.ndarray:
        """Run pack + kernel on this CPU: ``x_q`` (spec.x_shape) -> float32 ``spec.out_shape``."""
        return self.compile()(x_q, self.weight_inputs, bias)


class CompiledSumThenShift:
    """Both PrimFuncs of a kernel built into one module (functions ``pack`` and ``main``). The module
    depends on the spec, lane dtype and target only (plan buffers have symbolic lengths), so it is cached
    by those and serves any weights of that spec."""

    def __init__(self, k: SumThenShiftKernel) -> None:
        mod = tvm.IRModule({"pack": k.pack.with_attr("global_symbol", "pack"),
                            "main": k.main.with_attr("global_symbol", "main")})
        self.module = tvm.tirx.build(mod, target=k.target)
        self.packed_shape, self.lane_dtype, self.out_shape = k.packed_shape, k.lane_dtype, k.spec.out_shape
        self.has_bias = bool(k.spec.has_bias)

    def __call__(self, x_q: np.ndarray, weight_inputs: Sequence[np.ndarray],
                 bias: Optional[np.ndarray] = None) -> np.ndarray:
        """Pack ``x_q`` and run the kernel with ``weight_inputs``; returns the float32 output."""
        return run_prologue_and_main(self.module, "pack", x_q, (self.packed_shape, self.lane_dtype),
                                     weight_inputs, bias, self.has_bias,
                                     self.out_shape)


def run_prologue_and_main(module: Any, prologue: str, x_q: np.ndarray, mid: Tuple[Any, str],
                          weight_inputs: Sequence[np.ndarray], bias: Optional[np.ndarray], has_bias: bool,
                          out_shape: Any) -> np.ndarray:
    """CPU convenience shared by the two-kernel builds: ``prologue(x_q) -> mid``, then
    ``main(mid, *weight_inputs, [bias]) -> out`` (float32); returns ``out`` as numpy."""
    if has_bias and bias is None:
        raise ValueError("the kernel was built with a bias; pass one")
    x_t = tvm.runtime.tensor(np.ascontiguousarray(np.asarray(x_q).astype(np.int32)))
    mid_t = tvm.runtime.tensor(np.zeros(*mid))
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    module[prologue](x_t, mid_t)
    args = [mid_t] + [tvm.runtime.tensor(np.ascontiguousarray(w)) for w in weight_inputs]
    if has_bias:
        args.append(tvm.runtime.tensor(np.ascontiguousarray(np.asarray(bias, np.float32))))
    module["main"](*args, out)
    return out.numpy()


_COMPILED: dict = {}
_COMPILED_LOCK = threading.Lock()


def _compiled(k: SumThenShiftKernel) -> CompiledSumThenShift:
    key = (k.kind, k.spec, k.lane_dtype, k.vector_lanes, k.block, k.packed_shape, k.k_tiles, k.term_multiple,
           k.taps, k.odd_lines, str(k.target))
    with _COMPILED_LOCK:
        hit = _COMPILED.get(key)
    if hit is None:
        hit = CompiledSumThenShift(k)
        with _COMPILED_LOCK:
            _COMPILED[key] = hit
    return hit


def segment_lane_dtype(act_bits: Tuple[int, int]) -> str:
    """Lane dtype of the conv / dense kernel (the segment sums) for activations ``Q(I, F)``."""
    return lane_dtype_for(_x_absmax(act_bits))


def _x_absmax(act_bits: Tuple[int, int]) -> int:
    i, f = (int(v) for v in act_bits)
    if i + f < 1 or i + f > 32:
        raise ValueError(f"activation format Q({i},{f}) must have 1..32 bits")
    return 2 ** (i + f - 1)


def build(kind: str, spec: Union[Conv2dSpec, DenseSpec], codes: np.ndarray,
          target: Union[str, dict, tvm.target.Target], act_bits: Tuple[int, int],
          k_tiles: Optional[int] = None, lanes: Optional[int] = None,
          block_vectors: Optional[int] = None, taps: Optional[bool] = None) -> SumThenShiftKernel:
    """Build the sum-then-shift kernel of one layer (see the module doc for layouts and numerics).

    Args:
        kind: ``"conv2d"`` (with a :class:`Conv2dSpec`; depthwise specs get the depthwise kernel) or
            ``"dense"`` (with a :class:`DenseSpec`; meant for batch > 1, see the module doc).
        spec: the kernel spec; ``spec.acc_dtype`` must be the accumulator the accumulator pass proved
            (``passes.accumulator.plan_accumulator``), ``spec.s0`` the codes' ``s0``.
        codes: int8 codes ``sign * (shift - s0 + 1)`` in PyTorch layout ``(O, C/G, KH, KW)`` / ``(N, K)``.
        target: anything :func:`schedules.target.resolve_target` takes (LLVM targets).
        act_bits: the activation format ``(I, F)`` (``|x_q| <= 2**(I+F-1)``); ``F`` must be ``spec.frac_bits``.
        k_tiles: input-channel tiles of the conv / dense kernel (:func:`default_k_tiles` when None; ignored
            by depthwise).
        lanes: lanes per vector of the conv / dense kernel, a power of two from 8 to the target's width
            (``_pixel_lanes`` when None; ignored by depthwise).
        block_vectors: at most this many vectors per pixel block, 1 to 8 (when None: :data:`BLOCK_VECTORS`, or
            the whole image where :data:`WHOLE_IMAGE_VECTORS` allows).
            ``k_tiles``, ``lanes`` and ``block_vectors`` are what ``shiftcomp.tune`` chooses per layer
            (:mod:`schedules.shape_choices`); every choice computes the same bits.
        taps: the conv kernel's layout: aligned tap copies first (True) or the halo layout first (False);
            :func:`aligned_taps` when None (ignored by depthwise and dense). Either computes the same bits.

    Returns:
        The :class:`SumThenShiftKernel`.

    Raises:
        ValueError: unknown kind, spec/codes mismatch, a non-LLVM target, or a format whose bound the
            codes cannot meet.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown sum-then-shift kind {kind!r}; expected one of {KINDS}")
    tgt = resolve_target(target)
    if tgt.kind.name != "llvm":
        raise ValueError(f"sum-then-shift kernels are built for LLVM (CPU) targets, got {tgt.kind.name!r}")
    if int(act_bits[1]) != int(spec.frac_bits):
        raise ValueError(f"act_bits F={act_bits[1]} differs from spec.frac_bits={spec.frac_bits}")
    x_absmax = _x_absmax(act_bits)
    codes = np.asarray(codes)
    if kind == "conv2d":
        if not isinstance(spec, Conv2dSpec):
            raise ValueError(f"kind 'conv2d' needs a Conv2dSpec, got {type(spec).__name__}")
        want = (spec.out_channels, spec.group_in, spec.kernel_h, spec.kernel_w)
    else:
        if not isinstance(spec, DenseSpec):
            raise ValueError(f"kind 'dense' needs a DenseSpec, got {type(spec).__name__}")
        want = (spec.out_features, spec.in_features)
    if tuple(codes.shape) != want:
        raise ValueError(f"codes have shape {tuple(codes.shape)}, the spec needs {want}")
    _check_bound(spec, codes, x_absmax)
    acc = spec.acc_dtype
    if kind == "conv2d" and is_depthwise(spec):
        lane = "int16" if x_absmax <= 2 ** 15 else "int32"
        vw = _lanes(tgt, acc)                    # the depthwise sum is in the accumulator dtype
        n_pix = spec.out_hw[0] * conv_rows(spec, vw)[0]
        nv, vb = _block(n_pix, vw)
        tail = _round_up(n_pix, vb)              # zero weights read a whole image of zeros
        derive = functools.partial(derive_depthwise_inputs, spec, tail=tail, row_align=vw)
        kkind, kt, tm, use_taps, odd = "depthwise", 1, 1, False, 0
    else:
        lane = lane_dtype_for(x_absmax)
        full = _lanes(tgt, lane)
        vw = _pixel_lanes(kind, spec, full, lane, taps) if lanes is None else int(lanes)
        if not min(8, full) <= vw <= full or vw & (vw - 1):
            raise ValueError(f"lanes={lanes} must be a power of two from {min(8, full)} to {full} (this target)")
        if block_vectors is not None and not 1 <= int(block_vectors) <= 8:
            raise ValueError(f"block_vectors={block_vectors} must be 1..8")
        use_taps = aligned_taps(kind, vw, lane, taps)
        odd = CACHE_LINE_BITS // LANE_BITS[lane] if kind == "conv2d" else 0
        nv, vb = (_block(_pixels(kind, spec, vw, lane, use_taps), vw, BLOCK_VECTORS,
                         _whole_image_vectors(tgt, lane, acc)) if block_vectors is None
                  else _block(_pixels(kind, spec, vw, lane, use_taps), vw, block_vectors))
        tm = TERM_MULTIPLE if nv <= PAD_MAX_VECTORS else 1
        # padding terms read the zero tail at every pixel block's position: a whole image of zeros
        tail = _round_up(_pixels(kind, spec, vw, lane, use_taps), vb) if tm > 1 else vb
        kt = (default_k_tiles(spec, _layout(kind, spec, vw, tail, use_taps, odd), vb, lane, tgt) if k_tiles is None
              else int(k_tiles))
        kt = max(1, min(kt, spec.in_features if kind == "dense" else spec.group_in))
        if kind == "dense":
            derive = functools.partial(derive_dense_inputs, spec, x_absmax=x_absmax, tail=tail, k_tiles=kt,
                                       term_multiple=tm)
        else:
            derive = functools.partial(derive_conv2d_inputs, spec, x_absmax=x_absmax, tail=tail, row_align=vw,
                                       k_tiles=kt, term_multiple=tm, taps=int(use_taps), odd_lines=odd)
        kkind = kind
    layout, pack, main = _primfuncs(kkind, spec, lane, vw, nv, tail, vector_bits(tgt), kt, tm, use_taps, odd)
    return SumThenShiftKernel(kind=kkind, spec=spec, pack=pack, main=main, weight_inputs=tuple(derive(codes)),
                              derive=derive, lane_dtype=lane, packed_shape=(layout.length,), layout=layout,
                              vector_lanes=vw, block=nv * vw, target=tgt, act_bits=(int(act_bits[0]), int(act_bits[1])),
                              tail=tail, k_tiles=kt, term_multiple=tm, taps=use_taps, odd_lines=odd)


def default_k_tiles(spec: Union[Conv2dSpec, DenseSpec], layout: ActivationLayout, block: int, lane: str,
                    target: tvm.target.Target) -> int:
    """Input-channel tiles of a conv with a spatial kernel whose activations for a pixel block exceed
    :data:`TILE_MIN_OVERFLOW` of :data:`TILE_L1_SHARE` of the target's L1d: as few as keep one tile within
    that share, but at least two, and at least :data:`MIN_TILE_CHANNELS` channels each per row phase of the
    stride. 1 (no tiling)
    for 1x1 convs and dense: with one term per input channel the extra segments cost more than the L1 hits
    gain (``experiments/bench_sum_then_shift.py --k-tiles``)."""
    if isinstance(spec, DenseSpec) or spec.kernel_h * spec.kernel_w == 1:
        return 1
    n_in = spec.group_in
    rows = ((spec.kernel_h - 1) * spec.dilation[0]) // spec.stride[0]
    cols = ((spec.kernel_w - 1) * spec.dilation[1]) // spec.stride[1] if layout.halo else 0
    span = min(layout.plane, block + rows * layout.row_len + cols)
    per_channel = len(layout.copies) * span * LANE_BITS[lane] // 8
    budget = int(l1d_bytes(target) * TILE_L1_SHARE)
    if n_in * per_channel <= TILE_MIN_OVERFLOW * budget:
        return 1
    return max(1, min(max(2, -(-n_in * per_channel // budget)), n_in // (MIN_TILE_CHANNELS * spec.stride[0])))


@functools.lru_cache(maxsize=256)
def _primfuncs(kind: str, spec: Any, lane: str, vw: int, nv: int, tail: int, vbits: int, kt: int = 1,
               tm: int = 1, taps: bool = False, odd: int = 0
               ) -> Tuple[ActivationLayout, tirx.PrimFunc, tirx.PrimFunc]:
    """``(layout, pack, main)`` of one kernel instance (they depend on the shapes only, not on the weights)."""
    layout = _layout(kind, spec, vw, tail, taps, odd)
    pack = _pack_primfunc(layout, tuple(int(d) for d in spec.x_shape), lane, vbits)
    return layout, pack, _main_primfunc(kind, spec, lane, vw, nv, tail, Epilogue(), None, kt, tm, taps, odd)


def _layout(kind: str, spec: Any, vw: int, tail: int, taps: bool = False, odd: int = 0) -> ActivationLayout:
    return dense_layout(spec, tail) if kind == "dense" else conv_layout(spec, tail, vw, taps, odd)


@functools.lru_cache(maxsize=256)
def _main_primfunc(kind: str, spec: Any, lane: str, vw: int, nv: int, tail: int, epilogue: Epilogue,
                   packed: Optional[PackedStore] = None, kt: int = 1, tm: int = 1, taps: bool = False,
                   odd: int = 0) -> tirx.PrimFunc:
    layout = _layout(kind, spec, vw, tail, taps, odd)
    if kind == "depthwise":
        if packed is not None:
            raise ValueError("the depthwise kernel stores float32 only")
        return _dw_primfunc(spec, layout, lane, spec.acc_dtype, vw, nv, epilogue)
    return _stst_primfunc(spec, layout, lane, spec.acc_dtype, vw, nv, epilogue, packed, kt, tm)


def _check_bound(spec: Any, codes: np.ndarray, x_absmax: int) -> None:
    """The accumulator must hold the proven bound ``max_o Σ_k 2**(|code|-1) * x_absmax`` (what the accumulator
    pass decided), computed in exact Python integers."""
    rows = np.abs(codes.astype(np.int64).reshape(codes.shape[0], -1))
    if rows.size and rows.max() <= 40:   # 2**39 * terms cannot wrap int64
        bound = int(np.where(rows > 0, np.left_shift(1, np.maximum(rows - 1, 0)), 0).sum(axis=1).max()) * int(x_absmax)
    else:
        bound = max((sum(1 << (int(v) - 1) for v in r if v) for r in rows.tolist()), default=0) * int(x_absmax)
    limit = 2 ** (LANE_BITS[spec.acc_dtype] - 1)
    if bound >= limit:
        raise ValueError(f"accumulator bound {bound} does not fit spec.acc_dtype={spec.acc_dtype}; "
                         f"use passes.accumulator.plan_accumulator to choose it")
