"""The weight layouts of the adder kernels (:mod:`schedules.adder`), numpy only.

Kept apart from the kernels so that ``shiftcomp.load`` can rebuild an adder kernel's weight array from the
packed ``w_q`` (:mod:`passes.adder_weights`) with a runtime-only TVM: :mod:`schedules.adder` imports
TVMScript, which needs the compiler library.
"""
from __future__ import annotations

import numpy as np

__all__ = ["psadbw_weights", "vsadu4_weights"]


def psadbw_weights(w_q: np.ndarray) -> np.ndarray:
    """``(O, C/G, KH, KW)`` integer weights -> ``uint64 (O * C8 * KH * KW,)``, ``C8 = ceil(C/G / 8)``: per
    ``(o, channel block, tap)`` the 8 channel bytes ``w + 128`` (little endian; channels past ``C/G`` are 128,
    i.e. ``w = 0``)."""
    w = np.asarray(w_q).astype(np.int64)
    o, c, kh, kw = w.shape
    c8 = -(-c // 8)
    wu = np.full((o, c8 * 8, kh, kw), 128, dtype=np.uint8)
    wu[:, :c] = (w + 128).astype(np.uint8)
    wu = wu.reshape(o, c8, 8, kh * kw).transpose(0, 1, 3, 2)               # (O, C8, taps, 8)
    return np.ascontiguousarray(wu).view(np.uint64).reshape(-1)


def vsadu4_weights(w_q: np.ndarray) -> np.ndarray:
    """``(O, C/G, KH, KW)`` 8-bit weights -> ``uint32 (O, ceil(C/G / 4), KH, KW)``: 4 channels' bytes ``w + 128``
    per word, channel ``4q + i`` in byte ``i`` (channels past ``C/G`` are 128, i.e. ``w = 0``)."""
    w = np.asarray(w_q).astype(np.int64)
    o, cg, kh, kw = w.shape
    c4 = -(-cg // 4)
    wu = np.full((o, c4 * 4, kh, kw), 128, dtype=np.uint32)
    wu[:, :cg] = (w + 128).astype(np.uint32)
    wu = wu.reshape(o, c4, 4, kh, kw)
    return (wu[:, :, 0] | (wu[:, :, 1] << 8) | (wu[:, :, 2] << 16) | (wu[:, :, 3] << 24)).astype(np.uint32)
