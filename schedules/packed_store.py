"""The integer handoff between layers: a conv kernel stores its output, quantised, straight into the packed
input of the next sum-then-shift kernel (numpy only).

Without it, a conv followed by another shift conv runs::

    y  = conv_A(...)                      # float32 NCHW, after its fused epilogue (BatchNorm, ReLU, ...)
    xp = pack_B(y)                        # quantise to Q(I, F) and write B's zero-padded copies (int16)

With it, ``conv_A``'s store computes the same ``clamp(round(y * 2**F))`` (the quantising pack's expression,
:func:`schedules.compute.quantize_value`) and writes it into every copy of ``B``'s layout
(:mod:`schedules.sum_then_shift_layout`); the rest of that layout (padding rows, plane gaps, the image's zero
tail: :func:`zero_runs`) is zeroed by the same kernel, by the tasks of an image's first and last pixel block.
No float tensor, no pack kernel: ``B`` reads exactly the buffer the pack would have written.

Supported geometry (:func:`copy_offsets`): ``B`` has stride 1 and dilation 1 and packed rows of ``OW``
(``B``'s output width equals ``A``'s, "same" padding; the tap-copy layout, or the halo layout of a 1 x 1
conv), and ``A``'s own rows are ``OW`` long,
so one output pixel ``p = oh * OW + ow`` of ``A`` goes to ``p + d`` in each copy, with one constant ``d`` per
copy: a vector of pixels is one contiguous store. Pixels whose column falls outside a copy's row land in
that copy's zero columns of the neighbouring row, so the store puts zeros in those lanes
(:func:`column_shifts`): each copy's run ``[d, d + OH*OW)`` of a plane is then written whole with the pack's
values, and only the few rows before and after it are left to zero (two contiguous runs per plane), each
by the task that stored the neighbouring pixels, while those lines are in its L1. (A zero pass after the
main loop reached lines already evicted: at batch 64 one miss per plane edge, and when it rewrote every
zero column, one per packed row; it cost more than the pack the handoff saves.)
:func:`copy_offsets` checks all of this on the layout itself (every packed element written with the pack's
value, a data element by exactly one store) before the kernel is built that way.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Tuple

import numpy as np

from .sum_then_shift_layout import ActivationLayout, pack_numpy

__all__ = ["PackedStore", "copy_offsets", "column_shifts", "zero_runs"]


@dataclasses.dataclass(frozen=True)
class PackedStore:
    """Where and how a kernel stores its output for the next kernel (module doc).

    Attributes:
        layout: the consuming sum-then-shift kernel's packed-activation layout.
        lane: its lane dtype (``"int16"`` for 8-bit activations).
        act_bits: its activation format ``(I, F)``.
        rounding, qmax: its quantisation (``schedules.compute.quantize_value``).
    """

    layout: ActivationLayout
    lane: str
    act_bits: Tuple[int, int]
    rounding: str
    qmax: Optional[int] = None

    @property
    def length(self) -> int:
        """Elements of the packed buffer."""
        return self.layout.length


@functools.lru_cache(maxsize=256)   # asked by can_store_into and again when the kernel is built
def copy_offsets(out_shape: Tuple[int, int, int, int], row_len: int, store: PackedStore
                 ) -> Optional[Tuple[int, ...]]:
    """Per copy ``i`` of ``store.layout``, the offset ``d_i`` such that output pixel ``p = oh * OW + ow`` of
    channel ``c`` of image ``n`` is stored at ``n * image_len + (i * C + c) * plane + d_i + p``; ``None``
    when the layout cannot be written that way (module doc).

    Args:
        out_shape: the producing kernel's NCHW output shape ``(N, O, OH, OW)``.
        row_len: the producing kernel's row length (pixels per row of its own block loop).
        store: the consumer's layout and format.
    """
    out_shape = tuple(int(d) for d in out_shape)
    n, o, oh, ow = out_shape
    lay = store.layout
    if (lay.transpose_dense or lay.stride != (1, 1) or lay.dilation != (1, 1)
            or lay.images != n or lay.channels != o or tuple(lay.in_hw) != (oh, ow)
            or lay.row_len != ow or int(row_len) != ow or any(a != 0 for _, a in lay.copies)):
        return None
    pt, pl = lay.pad_tl
    offsets = tuple(pt * lay.row_len + pl - cs for cs, _ in lay.copies)
    return offsets if _writes_the_pack(out_shape, offsets, lay) else None


def column_shifts(offsets: Tuple[int, ...], lay: ActivationLayout) -> Tuple[int, ...]:
    """Per copy, the column shift ``s`` of its stores: output column ``ow`` lands in packed column ``ow + s``
    of its row, and a lane with ``ow + s`` outside ``[0, OW)`` lands in a zero column of the neighbouring row
    (the kernel stores 0 there)."""
    return tuple(d - lay.pad_tl[0] * lay.row_len for d in offsets)


def zero_runs(offsets: Tuple[int, ...], lay: ActivationLayout, n_pixels: int
              ) -> Tuple[Tuple[Tuple[int, int], Tuple[int, int]], ...]:
    """Per copy, the two ``(start, count)`` runs of a plane, relative to its start, that no store writes:
    before and after the stored run ``[d, d + n_pixels)``, clipped to the plane (a count may be 0)."""
    runs = []
    for d in offsets:
        a = min(max(d, 0), lay.plane)
        b = min(max(d + n_pixels, a), lay.plane)
        runs.append(((0, a), (b, lay.plane - b)))
    return tuple(runs)


def _writes_the_pack(out_shape: Tuple[int, ...], offsets: Tuple[int, ...], lay: ActivationLayout) -> bool:
    """Whether the stores of :func:`copy_offsets` (lanes leaving their row zeroed, :func:`column_shifts`) and
    the zero runs (:func:`zero_runs`, the image's tail) give ``pack_numpy``'s buffer for one image (images are
    independent) in either order: every element written, data elements by exactly one store and never by a
    zeroed lane or a zero run."""
    _, o, oh, ow = out_shape
    ids = np.arange(1, o * oh * ow + 1, dtype=np.int64).reshape(1, o, oh, ow)   # every pixel its own value
    want = pack_numpy(dataclasses.replace(lay, images=1), ids, "int64")
    got = np.full(lay.image_len, -1, np.int64)
    count = np.zeros(lay.image_len, np.int64)
    pixels = np.arange(oh * ow)
    for i, (d, s) in enumerate(zip(offsets, column_shifts(offsets, lay))):
        col = pixels % ow + s
        inside = (col >= 0) & (col < ow)
        for c in range(o):
            dest = (i * o + c) * lay.plane + d + pixels
            if dest.min() < 0 or dest.max() >= lay.image_len or want[dest[~inside]].any():
                return False
            got[dest] = np.where(inside, ids[0, c].reshape(-1), 0)
            np.add.at(count, dest[inside], 1)
    zero = np.zeros(lay.image_len, bool)
    for i, runs in enumerate(zero_runs(offsets, lay, oh * ow)):
        for c in range(o):
            for a, n in runs:
                zero[(i * o + c) * lay.plane + a:(i * o + c) * lay.plane + a + n] = True
    zero[lay.zero_offset:lay.zero_offset + lay.tail] = True
    data = want != 0
    if (zero & data).any():
        return False
    got[zero] = 0
    return bool(np.array_equal(got, want) and np.all(count[data] == 1))
