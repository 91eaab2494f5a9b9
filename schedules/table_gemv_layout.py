"""The weight-input layouts of the table GEMV kernel (:mod:`schedules.table_gemv`), numpy only.

Kept apart from the kernels so that ``shiftcomp.load`` can rebuild a layer's code bytes / nibbles and their
constants from the packed codes (:mod:`passes.table_gemv_inputs`) with a runtime-only TVM: the kernels are
built with TVMScript, which needs the compiler library. The layouts are described in
:mod:`schedules.table_gemv`'s module doc; the numpy twins of its pre-kernels (:func:`table_numpy`,
:func:`signed_table_numpy`) are here too.
"""
from __future__ import annotations

import numpy as np

from .specs import DenseSpec

__all__ = ["MAX_CODE", "MAX_CHUNK", "NEG_FLAG", "NIBBLE_LEVELS", "NIBBLE_MAX_TAIL", "TAIL_LEVEL_SHIFT",
           "byte_chunks", "nibble_chunks", "encode_codes", "derive_inputs", "derive_nibble_inputs",
           "derive_gather_tail_inputs", "gather_lanes", "nibble_window", "table_numpy", "signed_table_numpy",
           "gather_table_numpy"]

#: largest ``|code|`` the 16-entry tables hold (entry 0 is the zero weight)
MAX_CODE = 15
#: inputs per chunk: every per-plane byte sum (<= 255 per input) must fit uint16
MAX_CHUNK = 255
#: byte of a negative weight's code
NEG_FLAG = 0x40


def byte_chunks(k: int) -> tuple[int, int]:
    """``(NCH, C)``: chunks of at most :data:`MAX_CHUNK` inputs, as even as possible (``KP = NCH * C``)."""
    nch = max(1, -(-k // MAX_CHUNK))
    return nch, -(-k // nch)


def encode_codes(codes: np.ndarray, lanes: int, kp: int) -> np.ndarray:
    """PyTorch-layout ``(N, K)`` codes -> the kernel's bytes ``(NBLK, KP, L)`` flattened: ``|c| | 0x40*(c<0)``
    at ``[o // L, i, o % L]``, zero for padding outputs / inputs."""
    c = np.asarray(codes).astype(np.int16)
    n, k = c.shape
    nblk = -(-n // lanes)
    b = (np.abs(c) | np.where(c < 0, NEG_FLAG, 0)).astype(np.int8)
    out = np.zeros((nblk * lanes, kp), np.int8)
    out[:n, :k] = b
    return np.ascontiguousarray(out.reshape(nblk, lanes, kp).transpose(0, 2, 1)).reshape(-1)


def derive_inputs(spec: DenseSpec, codes: np.ndarray, lanes: int) -> list[np.ndarray]:
    """``[codes bytes, nneg]`` of :func:`encode_codes` and the per-output negative-weight counts."""
    _, c = byte_chunks(spec.in_features)
    kp = byte_chunks(spec.in_features)[0] * c
    nneg = (np.asarray(codes) < 0).sum(axis=1).astype(np.int32)
    return [encode_codes(codes, lanes, kp), nneg]


def table_numpy(x_q: np.ndarray, kp: int, npl: int) -> np.ndarray:
    """NumPy twin of the ``table`` pre-kernel: uint8 ``(KP, NPL, 16)``."""
    x = np.zeros(kp, np.int64)
    x[:x_q.size] = np.asarray(x_q, np.int64).reshape(-1)
    j = np.arange(16)
    v = np.where(j > 0, x[:, None] << np.maximum(j - 1, 0), 0)           # (KP, 16)
    t = np.stack([(v >> (8 * b)) & 255 for b in range(npl)], axis=1)
    t[:, npl - 1] ^= 0x80
    return t.astype(np.uint8)


# ------------------------------------------------------------------------------- nibble variant (7 levels)
#: levels in the nibble variant's window (16 entries: zero, 7 levels, their negatives, one unused)
NIBBLE_LEVELS = 7
#: the nibble variant is chosen while at most this fraction of the nonzero weights falls outside its window
NIBBLE_MAX_TAIL = 0.05


def nibble_window(codes: np.ndarray) -> tuple[int, int]:
    """``(w0, tail)``: the window ``|code| in [w0, w0 + 6]`` holding the most weights, and how many nonzero
    weights lie outside it."""
    a = np.abs(np.asarray(codes).astype(np.int64)).reshape(-1)
    hist = np.bincount(a, minlength=MAX_CODE + 1)[1:MAX_CODE + 1]
    inside = [int(hist[w0 - 1:w0 - 1 + NIBBLE_LEVELS].sum()) for w0 in range(1, MAX_CODE - NIBBLE_LEVELS + 2)]
    best = int(np.argmax(inside))
    return best + 1, int(hist.sum()) - inside[best]


def nibble_chunks(k: int) -> tuple[int, int]:
    """``(NCH, C)`` with ``C`` even (inputs go in pairs, one byte per pair)."""
    nch = max(1, -(-k // (MAX_CHUNK - 1)))
    return nch, 2 * -(-k // (2 * nch))


def _window_nibbles(c: np.ndarray, kp: int, lanes: int, w0: int) -> tuple[np.ndarray, np.ndarray]:
    """``(nibble bytes, tail mask)``: the packed window nibbles ``(NBLK, KP/2, L)`` flattened, and which weights
    fall outside the window (nonzero, not in ``w0 .. w0+6``)."""
    n, k = c.shape
    nblk = -(-n // lanes)
    a = np.abs(c)
    inwin = (a >= w0) & (a < w0 + NIBBLE_LEVELS)
    j = np.where(inwin, a - w0 + 1, 0)
    nib = np.zeros((nblk * lanes, kp), np.int64)
    nib[:n, :k] = np.where(c < 0, (16 - j) & 15, j)
    packed = (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8)
    packed = np.ascontiguousarray(packed.reshape(nblk, lanes, kp // 2).transpose(0, 2, 1)).reshape(-1)
    return packed.view(np.int8), (a > 0) & ~inwin


#: a tail term packs the level above the index: ``(2 i + (c < 0)) | (|c| - 1) << TAIL_LEVEL_SHIFT``
TAIL_LEVEL_SHIFT = 24


def _tail_terms(c: np.ndarray, tail: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, terms)`` of the tail weights, row-major: term = the index of ``+-x_i`` in the pre-kernel's
    ``+-x`` section with the level above it."""
    rows, cols = np.nonzero(tail)
    a = np.abs(c[rows, cols])
    term = ((2 * cols + (c[rows, cols] < 0)) | ((a - 1) << TAIL_LEVEL_SHIFT)).astype(np.int32)
    return rows, cols, term


def derive_nibble_inputs(spec: DenseSpec, codes: np.ndarray, lanes: int) -> list[np.ndarray]:
    """``[code nibbles, tail_ptr, tail_term, base]`` of the nibble variant (scalar tail).

    Nibbles ``(NBLK, KP/2, L)`` flattened: byte ``[o // L, p, o % L]`` = nibble of input ``2p`` | nibble of
    ``2p + 1`` << 4; nibble ``j = |c| - w0 + 1`` (1..7) for a positive weight in the window, ``16 - j`` for a
    negative one, 0 otherwise. Weights outside the window are the tail, per output ``o`` the terms
    ``tail_term[tail_ptr[o]:tail_ptr[o+1]]`` = ``(2 i + (c < 0)) | (|c| - 1) << 24`` (the index of ``+-x_i`` in the
    pre-kernel's output). ``base = [w0 - 1]``."""
    c = np.asarray(codes).astype(np.int64)
    n, k = c.shape
    nch, cc = nibble_chunks(k)
    w0, _ = nibble_window(c)
    packed, tail = _window_nibbles(c, nch * cc, lanes, w0)
    rows, _, term = _tail_terms(c, tail)
    ptr = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
    if term.size == 0:
        term = np.zeros(1, np.int32)          # a non-empty buffer; tail_ptr says there are no terms
    return [packed, ptr, term, np.array([w0 - 1], np.int32)]


def gather_lanes(lanes: int) -> int:
    """int32 lanes of one vector of ``lanes`` bytes: the outputs one gather serves."""
    return lanes // 4


def derive_gather_tail_inputs(spec: DenseSpec, codes: np.ndarray, lanes: int) -> list[np.ndarray]:
    """``[code nibbles, tail_ptr, tail_term, base]`` of the gather-tail variant.

    The nibbles and ``base`` are :func:`derive_nibble_inputs`'. The tail is stored for vector gathers: outputs
    in groups of ``G =`` :func:`gather_lanes` ``(lanes)``, group ``g``'s terms are the columns
    ``tail_term[tail_ptr[g] * G : tail_ptr[g+1] * G]``, column-major (term ``r`` of output ``g * G + l`` at
    ``(tail_ptr[g] + r) * G + l``). A group has as many columns as its longest output has terms; the others
    are padded with ``2 * KP``, the index of a zero (``(2 i + (c < 0)) | (|c| - 1) << 24`` as in the nibble
    variant: the index of ``+-x_i`` in the pre-kernel's int32 ``+-x`` section)."""
    c = np.asarray(codes).astype(np.int64)
    n, k = c.shape
    nch, cc = nibble_chunks(k)
    kp = nch * cc
    w0, _ = nibble_window(c)
    packed, tail = _window_nibbles(c, kp, lanes, w0)
    rows, _, term = _tail_terms(c, tail)
    g = gather_lanes(lanes)
    ngrp = -(-n // lanes) * (lanes // g)
    count = np.bincount(rows, minlength=ngrp * g)
    cols = count.reshape(ngrp, g).max(axis=1)
    ptr = np.zeros(ngrp + 1, np.int32)
    np.cumsum(cols, out=ptr[1:])
    out = np.full(max(int(ptr[-1]), 1) * g, 2 * kp, np.int32)     # non-empty; padding reads the zero
    first = np.zeros(ngrp * g + 1, np.int64)
    np.cumsum(count, out=first[1:])
    rank = np.arange(rows.size) - first[rows]
    out[(ptr[rows // g] + rank) * g + rows % g] = term
    return [packed, ptr, out, np.array([w0 - 1], np.int32)]


def signed_table_numpy(x_q: np.ndarray, kp: int) -> np.ndarray:
    """NumPy twin of the nibble variant's pre-kernel, int16 ``(KP * 16 + 2 * KP,)``: the tables, as bytes
    ``(KP, 2, 16)`` -- entry ``j`` = ``x << (j-1)`` (``j`` 1..7), ``-(x << (15-j))`` (``j`` 9..15), 0 (``j`` 0, 8);
    plane 0 the low bytes, plane 1 the high bytes ``^ 0x80`` -- then ``x_i, -x_i`` per input (the tail's)."""
    x = np.zeros(kp, np.int64)
    x[:x_q.size] = np.asarray(x_q, np.int64).reshape(-1)
    j = np.arange(16)
    lvl = np.where(j < 8, j, 16 - j)
    mag = x[:, None] << np.maximum(lvl - 1, 0)
    v = np.where((j == 0) | (j == 8), 0, np.where(j < 8, mag, -mag))
    t = np.stack([v & 255, ((v >> 8) & 255) ^ 0x80], axis=1).astype(np.uint8)
    return np.concatenate([t.reshape(-1).view(np.int16), np.stack([x, -x], axis=1).reshape(-1).astype(np.int16)])


def gather_table_numpy(x_q: np.ndarray, kp: int) -> np.ndarray:
    """NumPy twin of the gather-tail variant's pre-kernel, int16 ``(KP * 20 + 4,)``: the nibble tables of
    :func:`signed_table_numpy`, then ``x_i, -x_i`` per input as int32 (two int16 words each, little-endian)
    and a zero pair (index ``2 * KP``, the tail's padding)."""
    x = np.zeros(kp, np.int64)
    x[:x_q.size] = np.asarray(x_q, np.int64).reshape(-1)
    tables = signed_table_numpy(x_q, kp)[:kp * 16]
    pm = np.concatenate([np.stack([x, -x], axis=1).reshape(-1), [0, 0]]).astype(np.int32)
    return np.concatenate([tables, pm.view(np.int16)])
