"""Batch-1 dense (GEMV) shift kernel: per-input byte tables read by ``vpshufb``, 16-bit byte-sum accumulators.

Entry point::

    k = build(spec, codes, target, act_bits=(I, F))     # -> TableGemvKernel
    # k.table: PrimFunc (X_q int32 (1, K)) -> tables (k.table_shape, k.table_dtype)   (pre-kernel)
    # k.main:  PrimFunc (tables, *k.weight_inputs, [bias f32 (N,)]) -> out f32 (1, N)
    # k.weight_inputs == k.derive(codes): byte variant [codes int8 (NBLK * KP * L,), nneg int32 (N,)],
    #                                     nibble variants [nibbles, tail_ptr, tail_term, base]
    # (k.derive: schedules.table_gemv_layout, numpy only; re-exported here)

For 8-bit activations (``|x| <= 128``) and codes with ``|code| <= 15`` (shift levels ``s = |code| - 1 <= 14``)
every term ``x << s`` fits ``NPL`` bytes (two's complement; ``NPL = 2`` when ``s <= 7``, else 3). The
pre-kernel writes, per input ``i`` and byte plane ``b``, the 16-entry table
``T[i, b, j] = byte_b(x_i << (j - 1))`` (``j = 0``: the zero weight), the top plane stored ``^ 0x80`` (a signed
byte as an unsigned one). The kernel runs ``L`` outputs per vector (AVX2 32 bytes, AVX-512BW 64), one byte per
weight: ``|code| | 0x40 * (code < 0)`` (``vpshufb`` reads bits 0-3 only and bit 7, which is clear)::

    for each output block of L (parallel):
        for each chunk of C <= 255 inputs:
            w[b], h[b] = 0 (L/2 uint16 words each; word j = outputs 2j (low byte), 2j+1 (high byte))
            for i in chunk:
                c = codes[blk, i]                # L bytes
                m = (c > 15) ? 0xff : 0          # vpcmpgtb: negative weight
                for b < NPL:
                    v = pshufb(T[i, b], c) ^ m   # byte b of ~(x << s) for negative weights
                    w[b] += v                    # as words, wrapping: sum(lo) + 256 * sum(hi) mod 2**16
                    h[b] += v >> 8               # as words: sum(hi), exact
            even / odd outputs += sum_b (S[b] - [top] 128 * C) << 8b,  S = w - (h << 8)  /  h
        out = float32(acc + nneg) * 2**(s0 - F) [+ bias]

Exact: ``-v == ~v + 1``, and ``~`` acts byte-wise, so a negative term is ``~v`` summed plane by plane plus
one; ``nneg[o]`` (the number of negative weights of output ``o``, a constant of the weights) adds the ones at
the end. Every byte sum of a chunk is ``<= 255 * C < 2**16``, so ``h`` is exact and the low bytes' sum is
``w - (h << 8)`` mod ``2**16``; the top plane's bytes are signed, stored ``+ 128``, hence ``- 128 * C``. A chunk
contributes its exact sum minus its negative count, so the running sum stays within the accumulator bound
plus ``K`` (checked). The inner loop per ``L`` terms is one code load, ``NPL`` table loads (16 bytes,
broadcast) and ``1 + 5 * NPL`` vector uops: ``vpcmpgtb``, then per plane ``vpshufb``, ``vpxor``, ``vpaddw``,
``vpsrlw``, ``vpaddw``. No multiply anywhere; the only multiply is the epilogue's float scale
(``schedules.compute._epilogue``).

**Nibble variant** (``variant="nibble"``, chosen by :func:`choose_variant` when at most
:data:`NIBBLE_MAX_TAIL` of the weights fall outside the best window of 7 consecutive levels ``w0 .. w0+6``,
e.g. He-initialised 5-bit layers, or every 4-bit layer): the 16 table entries are the signed terms
``x << (j-1)`` (``j`` 1..7) and their negatives (entries ``16 - j``), two bytes each (``|x << 6| <= 2**13``),
so a weight is a 4-bit index, two inputs per code byte, and the sign needs no ops: per 64 terms one code
load, ``vpsrlw`` + 2 ``vpand`` (nibbles), then per input and plane ``vpshufb``, ``vpaddw``, ``vpsrlw``,
``vpaddw`` (19 uops, ~9.5 per 32 terms, half the code bytes). The window sum is shifted by ``w0 - 1`` at the
end; weights outside it are a per-output scalar tail ``+-x_i << s`` (``+-x_i`` follow the tables in the
pre-kernel's int16 output). Inputs: ``[nibbles, tail_ptr, tail_term, base]`` (:func:`derive_nibble_inputs`).

**Gathered tail** (``variant="nibble_gather"``, what :func:`choose_variant` picks instead of ``"nibble"``
while an output's tail sum fits int32): the same window loop, but the tail runs ``G`` outputs at a time
(``G`` = 16 on AVX-512, 8 on AVX2): per column of ``G`` terms one ``vpgatherdd`` of the int32 ``+-x_i`` the
pre-kernel writes after the tables, a per-lane ``vpsllvd`` by the level, a ``vpaddd``. A group's columns
number its longest output's terms; shorter outputs read a zero (:func:`derive_gather_tail_inputs`). About
2.2x less time per tail term than the scalar loop. A new name, because the inputs' layout differs: artifacts
name their variant, and ``"nibble"`` ones still load.

**``vpermb``** (AVX-512 VBMI, both nibble variants): a 6-bit-index lookup in the 64-byte register that
holds 4 copies of an input's 16-byte table, so the bits above a nibble select a copy and need no mask: the
low nibble is the code byte itself, the high one ``vpsrlw`` by 4 (17 uops per 128 terms instead of 19).

**Multiplies.** The kernels have none. The pre-kernel shifts each input by 16 constant amounts; LLVM compiles
a shift by a constant vector as a multiply by powers of two, so with 512-bit vectors the nibble pre-kernels
call ``vpsllvd`` as an intrinsic. With 256-bit vectors LLVM folds that intrinsic back into a shift by
constants and emits ``vpmullw`` by powers of two (O(K) work per call, like the quantising prologue's float
scale; none per term).
"""
from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import tirx
from tvm.script import tirx as T

from .compute import DenseSpec, _epilogue, needs_exact_scale
from .segments import LANE_BITS
from .sum_then_shift import _check_bound, _drop_param, _x_absmax, run_prologue_and_main, vector_bits
from .table_gemv_layout import (MAX_CHUNK, MAX_CODE, NIBBLE_LEVELS, NIBBLE_MAX_TAIL, TAIL_LEVEL_SHIFT, byte_chunks,
                                derive_gather_tail_inputs, derive_inputs, derive_nibble_inputs, encode_codes,
                                gather_lanes, gather_table_numpy, nibble_chunks, nibble_window, signed_table_numpy,
                                table_numpy)
from .target import has_feature, resolve_target

__all__ = [
    "MAX_CHUNK",
    "MAX_CODE",
    "NIBBLE_LEVELS",
    "NIBBLE_MAX_TAIL",
    "NIBBLE_VARIANTS",
    "PREFETCH_BYTES",
    "PSHUFB",
    "VARIANTS",
    "TableGemvKernel",
    "applicable",
    "build",
    "choose_variant",
    "derive_inputs",
    "derive_gather_tail_inputs",
    "derive_nibble_inputs",
    "encode_codes",
    "gather_table_numpy",
    "nibble_window",
    "signed_table_numpy",
    "table_numpy",
]

#: kernel variants (see :func:`build`)
VARIANTS = ("byte", "nibble", "nibble_gather")
#: the variants with 4-bit codes and a 7-level window (their tables are int16)
NIBBLE_VARIANTS = ("nibble", "nibble_gather")
#: vector bits -> ``vpshufb`` intrinsic (in-lane 16-byte tables)
PSHUFB = {256: "llvm.x86.avx2.pshuf.b", 512: "llvm.x86.avx512.pshuf.b.512"}
#: AVX-512 VBMI byte permute (64-entry table, 6 index bits): ``permvar(table, index)``
VPERMB = "llvm.x86.avx512.permvar.qi.512"
#: software prefetch distance in the code stream (the hardware prefetcher alone left the loop waiting on
#: DRAM, and 512 bytes ahead kept too few lines in flight; a prefetch past the end of the buffer is harmless)
PREFETCH_BYTES = 2048
def _planes(max_code: int) -> int:
    """Bytes per term ``x << s`` (``|x| <= 128``, ``s = max_code - 1``): 2 up to ``s = 7``, else 3."""
    return 2 if max_code <= 8 else 3


def applicable(spec: DenseSpec, codes: np.ndarray, target: Any, act_bits: tuple[int, int] | None) -> str:
    """Why the table kernel does not compute this layer (``""`` when it does)."""
    tgt = resolve_target(target)
    if act_bits is None:
        return "float activations"
    if tgt.kind.name != "llvm" or vector_bits(tgt) not in PSHUFB:
        return f"needs an x86 target with AVX2 or AVX-512BW, got {tgt}"
    if not isinstance(spec, DenseSpec) or int(spec.batch) != 1:
        return "batch-1 dense only"
    if _x_absmax(act_bits) > 128:
        return f"activations Q{tuple(act_bits)} are wider than 8 bits"
    c = np.asarray(codes)
    if c.size and int(np.abs(c.astype(np.int32)).max()) > MAX_CODE:
        return f"codes beyond +-{MAX_CODE} (more than 15 shift levels)"
    if spec.acc_dtype not in ("int32", "int64"):
        return f"accumulator {spec.acc_dtype}"
    return ""


def _table_primfunc(k: int, kp: int, npl: int) -> tirx.PrimFunc:
    j = tirx.Ramp(0, 1, 16)                       # table entry j: the term x << (j - 1), entry 0 the zero weight

    def entries(xv):
        return tirx.shift_left(tirx.Select(j > tirx.Broadcast(0, 16), tirx.Broadcast(xv, 16), tirx.Broadcast(0, 16)),
                               tirx.max(j - tirx.Broadcast(1, 16), tirx.Broadcast(0, 16)))

    def plane(v, b):                              # b: the unrolled loop variable; the top plane gets ^ 0x80
        byte = tirx.bitwise_xor(tirx.shift_right(v, tirx.Broadcast(8 * b, 16)),
                                tirx.Broadcast(tirx.Select(b == npl - 1, 128, 0), 16))
        return tirx.Cast("uint8x16", tirx.bitwise_and(byte, tirx.Broadcast(255, 16)))

    @T.prim_func(private=True)
    def table(X: T.Buffer((1, k), "int32"), tbl: T.Buffer((kp * npl * 16,), "uint8")):
        T.func_attr({"tir.noalias": True})
        for i in range(kp):
            for b in T.unroll(npl):
                tbl[T.ramp((i * npl + b) * 16, 1, 16)] = plane(entries(T.if_then_else(i < k, X[0, T.min(i, k - 1)], 0)), b)
    return table


def _main_primfunc(spec: DenseSpec, kp: int, npl: int, lanes: int, C: int) -> tirx.PrimFunc:
    N = spec.out_features
    NBLK = -(-N // lanes)
    NCH = kp // C
    acc = spec.acc_dtype
    has_bias = bool(spec.has_bias)
    exact = needs_exact_scale(spec)
    intrin = PSHUFB[lanes * 8]
    L = lanes
    H = L // 2
    u8 = f"uint8x{L}"

    def tab(tbl, base):
        # the 16-byte table of one (input, plane), repeated in every 128-bit lane (vbroadcasti128)
        t16 = tirx.BufferLoad(tbl, [tirx.Ramp(base, 1, 16)])
        return tirx.Shuffle([t16] * (L // 16), list(range(L)))

    def term(tbl, base, c):
        # byte b of x << s, complemented for a negative weight (c > 15: the 0x40 flag), as H uint16 words:
        # low byte = even output, high byte = odd output
        neg = tirx.reinterpret(u8, tirx.Select(c > tirx.Broadcast(tirx.const(15, "int8"), L),
                                               tirx.Broadcast(tirx.const(-1, "int8"), L),
                                               tirx.Broadcast(tirx.const(0, "int8"), L)))
        return tirx.reinterpret(f"uint16x{H}",
                                tirx.bitwise_xor(tirx.call_llvm_pure_intrin(u8, intrin, tab(tbl, base), c), neg))

    def epi(a, b):
        return _epilogue(a, b, spec, exact)

    @T.prim_func(private=True)
    def gemv(tbl: T.Buffer((kp * npl * 16,), "uint8"), codes: T.Buffer((NBLK * kp * L,), "int8"),
             nneg: T.Buffer((N,), "int32"), bias: T.Buffer((N,), "float32"), out: T.Buffer((1, N), "float32")):
        T.func_attr({"tir.noalias": True})
        for blk in T.parallel(NBLK):
            acc_e = T.alloc_buffer((H,), acc, scope="global")     # outputs blk*L + 2j
            acc_o = T.alloc_buffer((H,), acc, scope="global")     # outputs blk*L + 2j + 1
            w = T.alloc_buffer((npl * H,), "uint16", scope="global")
            h = T.alloc_buffer((npl * H,), "uint16", scope="global")
            for j in T.vectorized(H):
                acc_e[j] = T.Cast(acc, 0)
                acc_o[j] = T.Cast(acc, 0)
            for ch in range(NCH):
                for b in T.unroll(npl):
                    for j in T.vectorized(H):
                        w[b * H + j] = T.uint16(0)
                        h[b * H + j] = T.uint16(0)
                for ii in range(C):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(
                        codes[(blk * kp + ch * C + ii) * L + PREFETCH_BYTES]), T.int32(0), T.int32(3), T.int32(1)))
                    for b in T.unroll(npl):
                        v = T.meta_var(term(tbl, ((ch * C + ii) * npl + b) * 16,
                                            codes[T.ramp((blk * kp + ch * C + ii) * L, 1, L)]))
                        w[T.ramp(b * H, 1, H)] = w[T.ramp(b * H, 1, H)] + v
                        h[T.ramp(b * H, 1, H)] = h[T.ramp(b * H, 1, H)] + T.shift_right(
                            v, T.Broadcast(T.uint16(8), H))
                for j in T.vectorized(H):
                    acc_e[j] = acc_e[j] + _combine(w, h, j, H, npl, C, acc, odd=False)
                    acc_o[j] = acc_o[j] + _combine(w, h, j, H, npl, C, acc, odd=True)
            for j in range(H):
                if blk * L + 2 * j < N:
                    out[0, blk * L + 2 * j] = epi(acc_e[j] + T.Cast(acc, nneg[blk * L + 2 * j]),
                                                  bias[blk * L + 2 * j] if has_bias else None)
                if blk * L + 2 * j + 1 < N:
                    out[0, blk * L + 2 * j + 1] = epi(acc_o[j] + T.Cast(acc, nneg[blk * L + 2 * j + 1]),
                                                      bias[blk * L + 2 * j + 1] if has_bias else None)

    if not has_bias:
        gemv = _drop_param(gemv, "bias")
    return gemv


def _combine(w, h, j, H, npl, C, acc, odd):
    """One chunk's exact sum (minus its negative count) of the even / odd output of word ``j``.

    Per plane ``b``: ``h`` holds the sum of the high (odd) bytes, ``w`` the wrapped sum of whole words, so the
    sum of the low (even) bytes is ``w - (h << 8)`` (mod 2**16; every byte sum is ``<= 255 * C < 2**16``)."""
    total = None
    for b in range(npl):
        hb = h[b * H + j]
        s = tirx.Cast(acc, hb if odd else w[b * H + j] - tirx.shift_left(hb, tirx.const(8, "uint16")))
        if b == npl - 1:
            s = s - tirx.const(128 * C, acc)      # the top plane's bytes are signed, stored + 128
        if b:
            s = tirx.shift_left(s, tirx.const(8 * b, acc))
        total = s if total is None else total + s
    return total


def _signed_table_primfunc(k: int, kp: int, vbits: int, wide: bool = False) -> tirx.PrimFunc:
    """The nibble tables, then ``+-x_i`` per input: int16 (scalar tail, ``(KP * 18,)``) or, ``wide``, int32 as
    two int16 words plus a zero pair (the gather tail, ``(KP * 20 + 4,)``).

    Entry ``j`` of an input's table is ``+-(x << s_j)``: a per-lane variable shift (``vpsllvd``, called as an
    intrinsic: LLVM turns a shift by a constant vector into a multiply), then the sign as ``(v ^ n) - n``."""
    j = tirx.Ramp(0, 1, 16)
    b16 = lambda v: tirx.Broadcast(v, 16)
    size = kp * 20 + 4 if wide else kp * 18
    # per entry: the shift (level - 1), a mask zeroing entries 0 and 8, the sign (-1: negated)
    lvl = tirx.Select(j < b16(8), j, b16(16) - j)
    shifts = tirx.max(lvl - b16(1), b16(0))
    keep = tirx.Select(tirx.Or(j == b16(0), j == b16(8)), b16(0), b16(-1))
    neg = tirx.Select(j > b16(8), b16(-1), b16(0))

    def shifted(xv):
        v = tirx.Broadcast(xv, 16)
        if vbits == 512:
            return tirx.call_llvm_pure_intrin("int32x16", "llvm.x86.avx512.psllv.d.512", v, shifts)
        halves = [tirx.call_llvm_pure_intrin("int32x8", "llvm.x86.avx2.psllv.d.256", tirx.Broadcast(xv, 8),
                                             tirx.Shuffle([shifts], list(range(h, h + 8)))) for h in (0, 8)]
        return tirx.Shuffle(halves, list(range(16)))

    def entries(xv):
        return tirx.bitwise_xor(tirx.bitwise_and(shifted(xv), keep), neg) - neg

    def plane(v, b):                              # b: the unrolled loop variable; the high byte gets ^ 0x80
        byte = tirx.bitwise_xor(tirx.shift_right(v, b16(8 * b)), b16(tirx.Select(b == 1, 128, 0)))
        return tirx.Cast("uint8x16", tirx.bitwise_and(byte, b16(255)))

    def plus_minus(xv):                           # [x, -x]
        return tirx.Shuffle([xv, 0 - xv], [0, 1])

    @T.prim_func(private=True)
    def table(X: T.Buffer((1, k), "int32"), tbl: T.Buffer((size,), "int16")):
        T.func_attr({"tir.noalias": True})
        for i in range(k):
            for b in T.unroll(2):
                tbl[T.ramp((i * 2 + b) * 8, 1, 8)] = T.reinterpret("int16x8", plane(entries(X[0, i]), b))
            if wide:                              # little-endian int32: low word, high word (the sign)
                tbl[T.ramp(kp * 16 + 4 * i, 1, 4)] = T.reinterpret("int16x4", plus_minus(X[0, i]))
            else:
                tbl[T.ramp(kp * 16 + 2 * i, 1, 2)] = T.Cast("int16x2", plus_minus(X[0, i]))
        for p in range(kp - k):                   # padding inputs: zero tables (entry bytes 0, 0 ^ 0x80)
            for b in T.unroll(2):
                tbl[T.ramp(((k + p) * 2 + b) * 8, 1, 8)] = T.reinterpret("int16x8", plane(b16(0), b))
            if wide:
                tbl[T.ramp(kp * 16 + 4 * (k + p), 1, 4)] = T.Broadcast(T.int16(0), 4)
            else:
                tbl[T.ramp(kp * 16 + 2 * (k + p), 1, 2)] = T.Broadcast(T.int16(0), 2)
        if wide:
            tbl[T.ramp(kp * 20, 1, 4)] = T.Broadcast(T.int16(0), 4)
    return table


def _nibble_main_primfunc(spec: DenseSpec, kp: int, lanes: int, C: int, gather: bool = False,
                          vbmi: bool = False) -> tirx.PrimFunc:
    """The nibble kernel; its tail scalar per output, or (``gather``) gathered ``G`` outputs at a time.

    ``vbmi`` (512-bit vectors only): look up with ``vpermb``, which reads 6 index bits, instead of ``vpshufb``
    (4 bits, and bit 7 zeroes). The broadcast table holds 4 copies of the 16 entries, so the 2 bits above a
    nibble may be anything and no ``vpand`` is needed: the low nibble is the code byte itself, the high one
    the byte shifted right by 4 (``vpsrlw``)."""
    N = spec.out_features
    NBLK = -(-N // lanes)
    NCH = kp // C
    acc = spec.acc_dtype
    has_bias = bool(spec.has_bias)
    exact = needs_exact_scale(spec)
    intrin = PSHUFB[lanes * 8]
    L = lanes
    H = L // 2
    KH = kp // 2
    u8 = f"uint8x{L}"
    n_tail = tirx.Var("n_tail", "int32")
    G = gather_lanes(L)
    NG = NBLK * (L // G)
    n_ptr = NG + 1 if gather else N + 1
    tbl_size = kp * 20 + 4 if gather else kp * 18
    tail_acc = "int32" if gather else acc

    def tab(tbl, base):
        t16 = tirx.reinterpret("uint8x16", tirx.BufferLoad(tbl, [tirx.Ramp(base // 2, 1, 8)]))
        return tirx.Shuffle([t16] * (L // 16), list(range(L)))

    def nibbles(c, hi):
        # the low / high nibbles of L code bytes (vpsrlw on words, then vpand: bits crossing bytes are masked)
        # hi: the unrolled loop variable (0 / 1), constant after unrolling
        cu = tirx.reinterpret(u8, tirx.shift_right(tirx.reinterpret(f"uint16x{H}", c),
                                                   tirx.Broadcast(tirx.Cast("uint16", hi * 4), H)))
        return cu if vbmi else tirx.bitwise_and(cu, tirx.Broadcast(tirx.const(15, "uint8"), L))

    def term(tbl, base, c, hi):
        if vbmi:
            return tirx.reinterpret(f"uint16x{H}", tirx.call_llvm_pure_intrin(u8, VPERMB, tab(tbl, base), nibbles(c, hi)))
        return tirx.reinterpret(f"uint16x{H}", tirx.call_llvm_pure_intrin(u8, intrin, tab(tbl, base), nibbles(c, hi)))

    def tail_term(tbl, e):
        # +-x_i << s for the packed tail term e = (2 i + neg) | s << 24 (+-x_i follow the tables)
        return tirx.shift_left(
            tirx.Cast(acc, tbl[kp * 16 + tirx.bitwise_and(e, tirx.const(0xFFFFFF, "int32"))]),
            tirx.Cast(acc, tirx.shift_right(e, tirx.const(24, "int32"))))

    def gathered(tbl, col):
        # G terms +-x_i << s at once: a gather of the int32 +-x section, a per-lane shift
        idx = tirx.bitwise_and(col, tirx.Broadcast(tirx.const((1 << TAIL_LEVEL_SHIFT) - 1, "int32"), G))
        xs = _gather(G, tirx.address_of(tirx.BufferLoad(tbl, [kp * 16])), idx)
        return tirx.shift_left(xs, tirx.shift_right(col, tirx.Broadcast(tirx.const(TAIL_LEVEL_SHIFT, "int32"), G)))

    def epi(a, b):
        return _epilogue(a, b, spec, exact)

    @T.prim_func(private=True)
    def gemv(tbl: T.Buffer((tbl_size,), "int16"), codes: T.Buffer((NBLK * KH * L,), "int8"),
             tail_ptr: T.Buffer((n_ptr,), "int32"), tail: T.Buffer((n_tail,), "int32"),
             base: T.Buffer((1,), "int32"), bias: T.Buffer((N,), "float32"), out: T.Buffer((1, N), "float32")):
        T.func_attr({"tir.noalias": True})
        for blk in T.parallel(NBLK):
            acc_e = T.alloc_buffer((H,), acc, scope="global")     # outputs blk*L + 2j
            acc_o = T.alloc_buffer((H,), acc, scope="global")     # outputs blk*L + 2j + 1
            w = T.alloc_buffer((2 * H,), "uint16", scope="global")
            h = T.alloc_buffer((2 * H,), "uint16", scope="global")
            t = T.alloc_buffer((1,), acc, scope="global")
            tv = T.alloc_buffer((L,), tail_acc, scope="global")  # the gathered tail sum per output
            for j in T.vectorized(H):
                acc_e[j] = T.Cast(acc, 0)
                acc_o[j] = T.Cast(acc, 0)
            for ch in range(NCH):
                for b in T.unroll(2):
                    for j in T.vectorized(H):
                        w[b * H + j] = T.uint16(0)
                        h[b * H + j] = T.uint16(0)
                for pp in range(C // 2):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(
                        codes[(blk * KH + ch * (C // 2) + pp) * L + PREFETCH_BYTES]), T.int32(0), T.int32(3), T.int32(1)))
                    for hi in T.unroll(2):
                        for b in T.unroll(2):
                            v = T.meta_var(term(tbl, ((ch * C + 2 * pp + hi) * 2 + b) * 16,
                                                codes[T.ramp((blk * KH + ch * (C // 2) + pp) * L, 1, L)], hi))
                            w[T.ramp(b * H, 1, H)] = w[T.ramp(b * H, 1, H)] + v
                            h[T.ramp(b * H, 1, H)] = h[T.ramp(b * H, 1, H)] + T.shift_right(
                                v, T.Broadcast(T.uint16(8), H))
                for j in T.vectorized(H):
                    acc_e[j] = acc_e[j] + _combine(w, h, j, H, 2, C, acc, odd=False)
                    acc_o[j] = acc_o[j] + _combine(w, h, j, H, 2, C, acc, odd=True)
            if gather:
                for g in range(L // G):
                    for l in T.vectorized(G):
                        tv[g * G + l] = 0
                    for e in range(tail_ptr[blk * (L // G) + g + 1] - tail_ptr[blk * (L // G) + g]):
                        tv[T.ramp(g * G, 1, G)] = tv[T.ramp(g * G, 1, G)] + gathered(
                            tbl, tail[T.ramp((tail_ptr[blk * (L // G) + g] + e) * G, 1, G)])
            for q in range(L):
                if blk * L + q < N:
                    t[0] = T.shift_left(T.if_then_else(q % 2 == 0, acc_e[q // 2], acc_o[q // 2]),
                                        T.Cast(acc, base[0]))
                    if gather:
                        t[0] = t[0] + T.Cast(acc, tv[q])
                    else:
                        for e in range(tail_ptr[blk * L + q + 1] - tail_ptr[blk * L + q]):
                            t[0] = t[0] + tail_term(tbl, tail[tail_ptr[blk * L + q] + e])
                    out[0, blk * L + q] = epi(t[0], bias[blk * L + q] if has_bias else None)

    if not has_bias:
        gemv = _drop_param(gemv, "bias")
    return gemv


def _gather(lanes: int, ptr: tirx.PrimExpr, idx: tirx.PrimExpr) -> tirx.PrimExpr:
    """``lanes`` int32 loads ``ptr[idx]`` (``vpgatherdd``; every lane enabled)."""
    if lanes == 16:
        return tirx.call_llvm_pure_intrin("int32x16", "llvm.x86.avx512.mask.gather.dpi.512",
                                          tirx.Broadcast(tirx.const(0, "int32"), 16), ptr, idx,
                                          tirx.Broadcast(tirx.const(True, "bool"), 16), tirx.const(4, "int32"))
    if lanes == 8:
        return tirx.call_llvm_pure_intrin("int32x8", "llvm.x86.avx2.gather.d.d.256",
                                          tirx.Broadcast(tirx.const(0, "int32"), 8), ptr, idx,
                                          tirx.Broadcast(tirx.const(-1, "int32"), 8), tirx.const(4, "int8"))
    raise ValueError(f"no gather for {lanes} int32 lanes")


# ----------------------------------------------------------------------------------------------- entry
@dataclasses.dataclass(frozen=True, eq=False)
class TableGemvKernel:
    """A built table GEMV kernel.

    Attributes:
        spec: the ``DenseSpec`` (batch 1).
        table: pre-kernel PrimFunc ``(X_q int32 (1, K), tables uint8 (table_shape,))``.
        main: kernel PrimFunc ``(tables, codes int8, nneg int32, [bias f32 (N,)], out f32 (1, N))``.
        weight_inputs: ``derive(codes)``: the code bytes and the negative counts.
        derive: ``codes -> weight_inputs`` (a ``functools.partial`` of :func:`derive_inputs`).
        table_shape, lanes, planes, chunk: the geometry it was generated with.
    """

    spec: DenseSpec
    table: tirx.PrimFunc
    main: tirx.PrimFunc
    weight_inputs: tuple[np.ndarray, ...]
    derive: Callable[[np.ndarray], list[np.ndarray]]
    table_shape: tuple[int, ...]
    lanes: int
    planes: int
    chunk: int
    target: tvm.target.Target
    variant: str = "byte"
    table_dtype: str = "uint8"

    def compile(self) -> CompiledTableGemv:
        """Build both PrimFuncs for :attr:`target` (cached in process by spec and geometry)."""
        key = (self.variant, self.spec, self.lanes, self.planes, self.chunk, str(self.target))
        with _COMPILED_LOCK:
            hit = _COMPILED.get(key)
        if hit is None:
            hit = CompiledTableGemv(self)
            with _COMPILED_LOCK:
                _COMPILED[key] = hit
        return hit

    def __call__(self, x_q: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Run table + kernel on this CPU: ``x_q`` (1, K) -> float32 (1, N)."""
        return self.compile()(x_q, self.weight_inputs, bias)


class CompiledTableGemv:
    """Both PrimFuncs built into one module (functions ``table`` and ``main``)."""

    def __init__(self, k: TableGemvKernel) -> None:
        mod = tvm.IRModule({"table": k.table.with_attr("global_symbol", "table"),
                            "main": k.main.with_attr("global_symbol", "main")})
        self.module = tvm.tirx.build(mod, target=k.target)
        self.table_shape, self.table_dtype, self.out_shape = k.table_shape, k.table_dtype, k.spec.out_shape
        self.has_bias = bool(k.spec.has_bias)

    def __call__(self, x_q: np.ndarray, weight_inputs: Sequence[np.ndarray],
                 bias: np.ndarray | None = None) -> np.ndarray:
        """Build the tables from ``x_q`` and run the kernel with ``weight_inputs``; returns the float32 output."""
        return run_prologue_and_main(self.module, "table", x_q, (self.table_shape, self.table_dtype),
                                     weight_inputs, bias, self.has_bias,
                                     self.out_shape)


_COMPILED: dict = {}
_COMPILED_LOCK = threading.Lock()


def build(spec: DenseSpec, codes: np.ndarray, target: str | dict | tvm.target.Target,
          act_bits: tuple[int, int], variant: str | None = None) -> TableGemvKernel:
    """Build the table GEMV kernel of one batch-1 dense layer (see the module doc).

    Args:
        spec: ``DenseSpec`` with ``batch == 1``; ``spec.acc_dtype`` the accumulator the accumulator pass proved.
        codes: int8 codes ``sign * (shift - s0 + 1)``, PyTorch layout ``(N, K)``.
        target: an x86 LLVM target with AVX2 or AVX-512BW.
        act_bits: the activation format ``(I, F)``; at most 8 bits, ``F == spec.frac_bits``.
        variant: ``"byte"`` (one code byte per weight, every level in the tables), ``"nibble"`` (half a byte, a
            7-level window, the rest as a scalar tail), ``"nibble_gather"`` (the same, the tail gathered a
            vector of outputs at a time) or ``None``: :func:`choose_variant`.

    Raises:
        ValueError: when :func:`applicable` says why not, the accumulator cannot hold the bound plus ``K``, or
            (``"nibble_gather"``) an output's tail sum does not fit int32.
    """
    tgt = resolve_target(target)
    codes = np.asarray(codes)
    why = applicable(spec, codes, tgt, act_bits)
    if why:
        raise ValueError(f"table GEMV kernel: {why}")
    if int(act_bits[1]) != int(spec.frac_bits):
        raise ValueError(f"act_bits F={act_bits[1]} differs from spec.frac_bits={spec.frac_bits}")
    if tuple(codes.shape) != (spec.out_features, spec.in_features):
        raise ValueError(f"codes have shape {tuple(codes.shape)}, the spec needs {(spec.out_features, spec.in_features)}")
    x_absmax = _x_absmax(act_bits)
    _check_bound(spec, codes, x_absmax)
    # the running sum lags the true partial sum by at most K (the negative counts are added at the end)
    rows = np.abs(codes.astype(np.int64))
    bound = max((sum(1 << (int(v) - 1) for v in r if v) for r in rows.tolist()), default=0) * x_absmax
    if bound + spec.in_features >= 2 ** (LANE_BITS[spec.acc_dtype] - 1):
        raise ValueError(f"table GEMV kernel: bound {bound} + K does not fit {spec.acc_dtype}")
    lanes = vector_bits(tgt) // 8
    if variant is None:
        variant = choose_variant(codes, x_absmax)
    if variant not in VARIANTS:
        raise ValueError(f"unknown table GEMV variant {variant!r}; expected one of {VARIANTS}")
    if variant == "nibble_gather" and _tail_bound(codes, x_absmax) >= 2 ** 31:
        raise ValueError(f"table GEMV kernel: an output's tail sum (bound {_tail_bound(codes, x_absmax)}) does not "
                         "fit the gathered int32 lanes")
    if variant in NIBBLE_VARIANTS:
        npl = 2
        nch, c = nibble_chunks(spec.in_features)
        fn = derive_gather_tail_inputs if variant == "nibble_gather" else derive_nibble_inputs
        derive = functools.partial(fn, spec, lanes=lanes)
    else:
        npl = _planes(int(rows.max()) if rows.size else 0)
        nch, c = byte_chunks(spec.in_features)
        derive = functools.partial(derive_inputs, spec, lanes=lanes)
    kp = nch * c
    vbmi = lanes == 64 and variant in NIBBLE_VARIANTS and has_feature(tgt, "avx512vbmi")
    table, main = _primfuncs(variant, spec, kp, npl, lanes, c, vbmi)
    shape = {"nibble": (kp * 18,), "nibble_gather": (kp * 20 + 4,)}.get(variant, (kp * npl * 16,))
    return TableGemvKernel(spec=spec, table=table, main=main, weight_inputs=tuple(derive(codes)), derive=derive,
                           table_shape=shape, table_dtype="int16" if variant in NIBBLE_VARIANTS else "uint8",
                           lanes=lanes, planes=npl, chunk=c, target=tgt, variant=variant)


def _tail_bound(codes: np.ndarray, x_absmax: int) -> int:
    """The largest ``|sum|`` of one output's tail terms (the weights outside the nibble window)."""
    a = np.abs(np.asarray(codes).astype(np.int64))
    w0, _ = nibble_window(a)
    tail = (a > 0) & ((a < w0) | (a >= w0 + NIBBLE_LEVELS))
    terms = np.where(tail, np.left_shift(1, np.maximum(a - 1, 0)), 0)
    return int(terms.sum(axis=1).max(initial=0)) * int(x_absmax)


def choose_variant(codes: np.ndarray, x_absmax: int = 128) -> str:
    """A nibble variant when at most :data:`NIBBLE_MAX_TAIL` of the nonzero weights fall outside the best
    7-level window (half the code bytes, 8 instead of 11-16 vector uops per 32 terms), else ``"byte"``.

    The nibble variant is ``"nibble_gather"`` (the tail a vector of outputs per gather, about 2.2x less time
    per tail term than the scalar loop) unless an output's tail sum can overflow its int32 lanes: then
    ``"nibble"``."""
    _, tail = nibble_window(codes)
    nonzero = int(np.count_nonzero(codes))
    if tail > NIBBLE_MAX_TAIL * nonzero:
        return "byte"
    return "nibble_gather" if _tail_bound(codes, x_absmax) < 2 ** 31 else "nibble"


@functools.lru_cache(maxsize=64)
def _primfuncs(variant: str, spec: DenseSpec, kp: int, npl: int, lanes: int, c: int, vbmi: bool = False
               ) -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    if variant in NIBBLE_VARIANTS:
        gather = variant == "nibble_gather"
        return (_signed_table_primfunc(spec.in_features, kp, lanes * 8, wide=gather),
                _nibble_main_primfunc(spec, kp, lanes, c, gather=gather, vbmi=vbmi))
    return _table_primfunc(spec.in_features, kp, npl), _main_primfunc(spec, kp, npl, lanes, c)
