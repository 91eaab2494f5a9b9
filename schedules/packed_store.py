"""The integer handoff between layers: a conv kernel stores its output, quantised, straight into the packed
input of the next sum-then-shift kernel (numpy only).

Without it, a conv followed by another shift conv runs::

    y  = conv_A(...)                      # float32 NCHW, after its fused epilogue (BatchNorm, ReLU, ...)
    xp = pack_B(y)                        # quantise to Q(I, F) and write B's zero-padded copies (int16)

With it, ``conv_A``'s store computes the same ``clamp(round(y * 2**F))`` (the quantising pack's expression,
:func:`schedules.compute.quantize_value`) and writes it into every copy of ``B``'s layout
(:mod:`schedules.sum_then_shift_layout`); the zero regions of that layout (padding rows and columns, plane
gaps, the image's zero tail) are written by the same kernel after its main loop. No float tensor, no pack
kernel: ``B`` reads exactly the buffer the pack would have written.

Supported geometry (:func:`copy_offsets`): ``B`` has stride 1 and dilation 1 and packed rows of ``OW``
(``B``'s output width equals ``A``'s, "same" padding; the tap-copy layout, or the halo layout of a 1 x 1
conv), and ``A``'s own rows are ``OW`` long,
so one output pixel ``p = oh * OW + ow`` of ``A`` goes to ``p + d`` in each copy, with one constant ``d`` per
copy: a vector of pixels is one contiguous store. Pixels whose column falls outside a copy's row land in
that copy's zero columns of the neighbouring row, which the zero pass, running after, writes again.
:func:`copy_offsets` checks all of this on the layout itself (every packed element written, from the right
pixel, exactly once or else rewritten by the zero pass) before the kernel is built that way.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Tuple

import numpy as np

from .sum_then_shift_layout import ActivationLayout, pack_numpy

__all__ = ["PackedStore", "copy_offsets"]


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


def _writes_the_pack(out_shape: Tuple[int, ...], offsets: Tuple[int, ...], lay: ActivationLayout) -> bool:
    """Whether the stores of :func:`copy_offsets` followed by the zero pass give ``pack_numpy``'s buffer for
    one image (images are independent), with every data element written by exactly one store."""
    _, o, oh, ow = out_shape
    ids = np.arange(1, o * oh * ow + 1, dtype=np.int64).reshape(1, o, oh, ow)   # every pixel its own value
    want = pack_numpy(dataclasses.replace(lay, images=1), ids, "int64")
    got = np.zeros(lay.image_len, np.int64)
    count = np.zeros(lay.image_len, np.int64)
    pixels = np.arange(oh * ow)
    for i, d in enumerate(offsets):
        for c in range(o):
            dest = (i * o + c) * lay.plane + d + pixels
            if dest.min() < 0 or dest.max() >= lay.image_len:
                return False
            got[dest] = ids[0, c].reshape(-1)
            np.add.at(count, dest, 1)
    data = want != 0
    got[~data] = 0                                      # the zero pass, after every data store
    return bool(np.array_equal(got, want) and np.all(count[data] == 1))
