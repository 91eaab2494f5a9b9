"""The activation layout and plan arrays of the sum-then-shift kernels (:mod:`schedules.sum_then_shift`), numpy
only.

Kept apart from the kernels so that ``shiftcomp.load`` can rebuild a layer's plan arrays from its packed codes
(:mod:`passes.sum_then_shift_plan`) with a runtime-only TVM: the kernels are built with TVMScript, which needs
the compiler library. The layouts are described in :mod:`schedules.sum_then_shift`'s module doc ("Activation
layout"); the segment plans in :mod:`schedules.segments`.
"""
from __future__ import annotations

import dataclasses
from typing import List, Tuple

import numpy as np

from .segments import plan_segments, segment_capacity
from .specs import Conv2dSpec, DenseSpec

__all__ = ["ActivationLayout", "conv_layout", "dense_layout", "conv_rows", "layout_orders_differ", "is_depthwise",
           "pack_numpy", "derive_conv2d_inputs", "derive_depthwise_inputs", "derive_dense_inputs", "PLANE_ALIGN",
           "ROW_PAD_MAX_WASTE", "round_up", "odd_line_plane", "input_tiles", "tile_code_rows", "cuda_lane_dtype",
           "derive_cuda_conv2d_inputs", "CUDA_TERM_C_SHIFT", "CUDA_TERM_KH_SHIFT"]

#: plane alignment in elements (cache-line-aligned planes for int16: 32 x 2 bytes)
PLANE_ALIGN = 32


def round_up(v: int, m: int) -> int:
    return (int(v) + m - 1) // m * m


def is_depthwise(spec: Conv2dSpec) -> bool:
    """One input and one output channel per group: the depthwise kernel."""
    return spec.group_in == 1 and spec.group_out == 1


# ----------------------------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class ActivationLayout:
    """Where the pack puts activations (see module doc). All sizes in elements of the lane dtype.

    Attributes:
        images: images per call (``N``; 1 for dense).
        channels: input channels ``C`` (``K`` for dense).
        copies: ``((cshift, a), ...)``: column shift and row phase of each copy, in buffer order
            (``copy[c, r, j] = x_pad[c, r * sh + a, j * sw + cshift]``).
        halo: rows carry the kernel's column halo (one copy per stride phase, taps ``kw`` at column offsets
            ``(kw * dw) // sw``) instead of one copy per column tap.
        rows, row_len: rows per plane and their length (``OW``; ``M`` for dense).
        plane: elements per (copy, channel) plane (``rows * row_len`` rounded up to :data:`PLANE_ALIGN`, for
            the conv kernel then to an odd number of cache lines, :func:`odd_line_plane`).
        tail: zero elements at the end of every image (>= the widest pixel block).
        stride, dilation, pad_tl, in_hw: conv geometry (dense: unit stride, no padding, ``(1, M)``).
    """

    images: int
    channels: int
    copies: Tuple[Tuple[int, int], ...]
    rows: int
    row_len: int
    plane: int
    tail: int
    stride: Tuple[int, int] = (1, 1)
    dilation: Tuple[int, int] = (1, 1)
    pad_tl: Tuple[int, int] = (0, 0)
    in_hw: Tuple[int, int] = (1, 1)
    transpose_dense: bool = False
    out_w: int = 0
    halo: bool = False

    @property
    def padded_rows(self) -> bool:
        """Rows longer than the output width (garbage columns ``out_w .. row_len-1``, never stored)."""
        return not self.transpose_dense and self.row_len != self.out_w

    @property
    def image_len(self) -> int:
        return len(self.copies) * self.channels * self.plane + self.tail

    @property
    def length(self) -> int:
        return self.images * self.image_len

    @property
    def zero_offset(self) -> int:
        """Offset (within an image) of the zero tail."""
        return len(self.copies) * self.channels * self.plane

    def term_offset(self, c: np.ndarray, kh: np.ndarray, kw: np.ndarray) -> np.ndarray:
        """Offset within an image of tap ``(c, kh, kw)`` for output pixel 0 (int64 arrays)."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        index = {cp: i for i, cp in enumerate(self.copies)}
        kh, kw = np.asarray(kh, np.int64), np.asarray(kw, np.int64)
        a = (kh * dh) % sh
        cs = (kw * dw) % sw if self.halo else kw * dw
        col = (kw * dw) // sw if self.halo else np.zeros_like(kw)
        cp = np.array([index[(int(x), int(y))] for x, y in zip(cs.reshape(-1), a.reshape(-1))], np.int64)
        return (cp.reshape(kh.shape) * self.channels + np.asarray(c)) * self.plane + ((kh * dh) // sh) * self.row_len \
            + col


#: pad rows to a multiple of the vector width when that costs at most 1/ROW_PAD_MAX_WASTE more pixels
ROW_PAD_MAX_WASTE = 6


def conv_rows(spec: Conv2dSpec, row_align: int, taps: bool = False) -> Tuple[int, bool]:
    """``(row_len, halo)`` of the packed planes of a conv (output pixels per row, garbage columns included).

    Rows a multiple of ``row_align`` (vector lanes) keep every vector load inside one cache line (split loads
    are slow) and every vector inside one output row. With ``taps`` (the conv kernel), the tap-copy layout
    with rows of ``OW`` rounded up comes first when its garbage columns cost <= 1/6 more work: a term at
    column tap ``kw`` then reads its own copy at a row start, so *every* term's vector load is aligned (in
    the halo layout, taps ``kw`` not a multiple of the lanes split cache lines), and input-channel tiles
    (:func:`schedules.sum_then_shift.default_k_tiles`) keep the ``KW`` x larger input block in L1.
    Otherwise (and first without ``taps``) the *halo* layout, rows of ``OW + ((KW-1)*dw)//sw`` rounded up --
    one copy per stride phase, so the input block of a pixel block fits L1 -- under the same 1/6 rule; then
    the tap-copy layout with rows of ``OW`` rounded up under that rule; else rows of exactly ``OW`` (no
    garbage columns)."""
    oh, ow = spec.out_hw
    ra = max(1, int(row_align))
    tap_rl = round_up(ow, ra)

    def cheap(rl: int) -> bool:
        return (rl - ow) * ROW_PAD_MAX_WASTE <= ow

    if ra > 1:
        if taps and cheap(tap_rl):
            return tap_rl, False
        halo_rl = round_up(ow + ((spec.kernel_w - 1) * spec.dilation[1]) // spec.stride[1], ra)
        if cheap(halo_rl):
            return halo_rl, True
    return (tap_rl if cheap(tap_rl) else ow), False


def layout_orders_differ(spec: Conv2dSpec, row_align: int) -> bool:
    """Whether :func:`conv_rows` gives a different layout with and without ``taps`` (rows that can carry the
    halo): only then is there a choice to make or to time."""
    return conv_rows(spec, row_align, True) != conv_rows(spec, row_align, False)


def odd_line_plane(elements: int, line: int) -> int:
    """``elements`` rounded up to :data:`PLANE_ALIGN`, then (``line`` > 0 elements per cache line) to an odd
    number of cache lines.

    A pixel block reads the same few rows of every channel plane. With a plane stride of an even number of
    lines those windows fall on a subset of the L1's sets (64 sets on the x86 CPUs we target: a stride of 8
    lines maps every channel to 8 of them), and an 8-way set then evicts lines the next output reads
    again; an odd stride spreads the windows over all sets."""
    plane = round_up(elements, PLANE_ALIGN)
    if line > 0 and (plane // line) % 2 == 0:
        plane += line
    return plane


def conv_layout(spec: Conv2dSpec, tail: int, row_align: int = 1, taps: bool = False, odd_lines: int = 0
                ) -> ActivationLayout:
    """The packed-activation layout of a conv spec (rows per :func:`conv_rows`; planes per
    :func:`odd_line_plane` with ``odd_lines`` elements per cache line, 0 = aligned only)."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    oh, ow0 = spec.out_hw
    ow, halo = conv_rows(spec, row_align, taps)
    phases = sorted({(kh * dh) % sh for kh in range(spec.kernel_h)})
    shifts = sorted({(kw * dw) % sw for kw in range(spec.kernel_w)}) if halo else \
        [kw * dw for kw in range(spec.kernel_w)]
    copies = tuple((cs, a) for cs in shifts for a in phases)
    rows = oh + ((spec.kernel_h - 1) * dh) // sh
    return ActivationLayout(images=spec.batch, channels=spec.in_channels, copies=copies, rows=rows, row_len=ow,
                            plane=odd_line_plane(rows * ow, odd_lines), tail=round_up(tail, PLANE_ALIGN),
                            stride=spec.stride, dilation=spec.dilation, pad_tl=(spec.padding[0], spec.padding[1]),
                            in_hw=(spec.height, spec.width), out_w=ow0, halo=halo)


def dense_layout(spec: DenseSpec, tail: int) -> ActivationLayout:
    """Dense as a 1 x M image with K channels: ``packed[k * plane + m] = X_q[m, k]``."""
    return ActivationLayout(images=1, channels=spec.in_features, copies=((0, 0),), rows=1, row_len=spec.batch,
                            plane=round_up(spec.batch, PLANE_ALIGN), tail=round_up(tail, PLANE_ALIGN),
                            in_hw=(1, spec.batch), transpose_dense=True)


def pack_numpy(layout: ActivationLayout, x_q: np.ndarray, lane_dtype: str) -> np.ndarray:
    """NumPy twin of the ``pack`` PrimFunc (for tests): ``X_q`` (spec layout) -> flat packed buffer."""
    out = np.zeros((layout.images, layout.image_len), np.int64)
    x = np.asarray(x_q).astype(np.int64)
    if layout.transpose_dense:
        m = x.shape[0]
        for k in range(layout.channels):
            out[0, k * layout.plane:k * layout.plane + m] = x[:, k]
        return out.reshape(-1).astype(lane_dtype)
    sh, sw = layout.stride
    pt, pl = layout.pad_tl
    h, w = layout.in_hw
    r = np.arange(layout.rows)
    o = np.arange(layout.row_len)
    for i, (cs, a) in enumerate(layout.copies):
        rr = r * sh + a - pt
        cc = o * sw + cs - pl
        ok = ((rr >= 0) & (rr < h))[:, None] & ((cc >= 0) & (cc < w))[None, :]
        vals = x[:, :, np.clip(rr, 0, h - 1)][:, :, :, np.clip(cc, 0, w - 1)] * ok
        for c in range(layout.channels):
            s = (i * layout.channels + c) * layout.plane
            out[:, s:s + layout.rows * layout.row_len] = vals[:, c].reshape(layout.images, -1)
    return out.reshape(-1).astype(lane_dtype)


# ----------------------------------------------------------------------------------------------- derive
def _conv_offsets(layout: ActivationLayout, spec: Conv2dSpec) -> np.ndarray:
    """``(O, Cg*KH*KW)`` offsets within an image of every weight of every output channel."""
    Cg, KH, KW, Og = spec.group_in, spec.kernel_h, spec.kernel_w, spec.group_out
    c, kh, kw = np.meshgrid(np.arange(Cg), np.arange(KH), np.arange(KW), indexing="ij")
    base = layout.term_offset(c.reshape(-1), kh.reshape(-1), kw.reshape(-1))          # group 0
    group = np.arange(spec.out_channels) // Og
    return base[None, :] + (group * Cg * layout.plane)[:, None]


def input_tiles(n_in: int, k_tiles: int) -> List[Tuple[int, int]]:
    """``k_tiles`` contiguous ranges ``[start, stop)`` of ``n_in`` input channels, as even as possible."""
    kt = max(1, min(int(k_tiles), int(n_in)))
    bounds = [(t * n_in) // kt for t in range(kt + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def tile_code_rows(codes: np.ndarray, n_in: int, k_tiles: int) -> np.ndarray:
    """``(k * O, row)`` codes, ``k = min(k_tiles, n_in)``: row ``t * O + o`` is output ``o``'s row with every
    term outside input tile ``t`` zeroed (a term's input channel is its column ``// (row // n_in)``: conv rows
    are ``(c, kh, kw)``)."""
    c = np.asarray(codes).reshape(codes.shape[0], -1)
    tiles = input_tiles(n_in, k_tiles)
    if len(tiles) == 1:
        return c
    per = c.shape[1] // n_in
    out = np.zeros((len(tiles) * c.shape[0], c.shape[1]), c.dtype)
    for t, (a, b) in enumerate(tiles):
        out[t * c.shape[0]:(t + 1) * c.shape[0], a * per:b * per] = c[:, a * per:b * per]
    return out


def derive_conv2d_inputs(spec: Conv2dSpec, codes: np.ndarray, x_absmax: int, tail: int,
                         row_align: int = 1, k_tiles: int = 1, term_multiple: int = 1, taps: int = 0,
                         odd_lines: int = 0) -> List[np.ndarray]:
    """Weight inputs of the conv / dense-batch kernel from the codes: ``[seg_ptr, seg_level, seg_npos, seg_tptr,
    term_offset]`` (int32). ``spec`` may be a :class:`DenseSpec` (batch > 1).

    ``k_tiles > 1`` splits every output's terms by input channel into that many tiles (:func:`input_tiles` of
    the group's input channels): the plan then has ``k_tiles * O`` rows, row ``t * O + o`` holding output
    ``o``'s terms of tile ``t``; the kernel sums all outputs of a chunk over one tile before the next tile, so
    the activations it reads stay in L1.

    ``term_multiple > 1`` pads every segment's positive and negative runs to a multiple of it with the offset
    of the zero tail (the layout's ``tail`` must then hold a whole image of zeros); ``seg_npos`` and
    ``seg_tptr`` count the padding. Artifacts written before it existed rebuild exact runs (the default).

    ``taps=1``: offsets into the layout :func:`conv_rows` gives with ``taps=True`` (aligned tap copies);
    artifacts written before it existed rebuild their halo-first offsets (the default). ``odd_lines``: planes
    of an odd number of cache lines of that many elements (:func:`odd_line_plane`); artifacts written before it
    existed rebuild offsets into aligned planes (the default, 0)."""
    dense = isinstance(spec, DenseSpec)
    n_out = spec.out_features if dense else spec.out_channels
    n_in = spec.in_features if dense else spec.group_in
    plan = plan_segments(tile_code_rows(np.asarray(codes), n_in, k_tiles), x_absmax)
    if dense:
        layout = dense_layout(spec, tail)
        off = plan.term_index.astype(np.int64) * layout.plane
    else:
        layout = conv_layout(spec, tail, row_align, bool(taps), int(odd_lines))
        offs = _conv_offsets(layout, spec)
        seg_row = np.repeat(np.arange(plan.n_out) % n_out, np.diff(plan.seg_ptr))
        term_row = np.repeat(seg_row, plan.segment_sizes())
        off = offs[term_row, plan.term_index]
    i32 = lambda a: np.ascontiguousarray(np.asarray(a, np.int32))  # noqa: E731
    if int(term_multiple) > 1:
        npos, tptr, off = _pad_runs(plan.seg_npos, plan.seg_tptr, off, int(term_multiple), layout.zero_offset)
        return [plan.seg_ptr, plan.seg_level, i32(npos), i32(tptr), i32(off)]
    return [plan.seg_ptr, plan.seg_level, plan.seg_npos, plan.seg_tptr, i32(off)]


def _pad_runs(npos: np.ndarray, tptr: np.ndarray, off: np.ndarray, m: int, zero: int
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every segment's positive and negative runs padded to a multiple of ``m`` terms with ``zero`` (the offset
    of the zero tail): ``(npos, tptr, offsets)`` of the padded plan."""
    npos = np.asarray(npos, np.int64)
    sizes = np.diff(np.asarray(tptr, np.int64))
    nneg = sizes - npos
    ppos, pneg = -(-npos // m) * m, -(-nneg // m) * m
    new_sizes = ppos + pneg
    new_tptr = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(new_sizes, out=new_tptr[1:])
    out = np.full(int(new_tptr[-1]), zero, np.int64)
    seg = np.repeat(np.arange(sizes.size), sizes)
    rank = np.arange(int(sizes.sum())) - np.repeat(np.asarray(tptr[:-1], np.int64), sizes)
    neg = rank >= npos[seg]
    dest = new_tptr[seg] + np.where(neg, ppos[seg] + rank - npos[seg], rank)
    out[dest] = off
    return ppos, new_tptr, out


def derive_depthwise_inputs(spec: Conv2dSpec, codes: np.ndarray, tail: int, row_align: int = 1
                            ) -> List[np.ndarray]:
    """Weight inputs of the depthwise kernel: ``[tap_offset, tap_level, tap_neg]`` int32 ``(C, KH*KW)``;
    a zero weight reads the image's zero tail (level 0)."""
    layout = conv_layout(spec, tail, row_align)
    c = np.asarray(codes).astype(np.int32).reshape(spec.out_channels, -1)
    off = _conv_offsets(layout, spec)
    off = np.where(c != 0, off, layout.zero_offset)
    level = np.where(c != 0, np.abs(c) - 1, 0)
    neg = np.where(c < 0, -1, 0)
    i32 = lambda a: np.ascontiguousarray(np.asarray(a, np.int32))  # noqa: E731
    return [i32(off), i32(level), i32(neg)]


def derive_dense_inputs(spec: DenseSpec, codes: np.ndarray, x_absmax: int, tail: int, k_tiles: int = 1,
                        term_multiple: int = 1) -> List[np.ndarray]:
    """Weight inputs of the dense kernel at batch > 1 (the conv kernel over a 1 x M image)."""
    return derive_conv2d_inputs(spec, codes, x_absmax, tail, k_tiles=k_tiles, term_multiple=term_multiple)


# ------------------------------------------------------------------------------------------------ CUDA
#: a CUDA conv term packs its input channel (within the group) and kernel tap: ``c << 16 | kh << 8 | kw``
CUDA_TERM_C_SHIFT, CUDA_TERM_KH_SHIFT = 16, 8


def cuda_lane_dtype(x_absmax: int) -> str:
    """Segment-sum dtype of the CUDA kernels: int32 (GPU integer adds are 32-bit; int16 saves nothing), int64
    when not one activation fits an int32 segment."""
    return "int32" if segment_capacity("int32", x_absmax) >= 1 else "int64"


def derive_cuda_conv2d_inputs(spec: Conv2dSpec, codes: np.ndarray, x_absmax: int) -> List[np.ndarray]:
    """Plan of the CUDA sum-then-shift conv kernel (``schedules.sum_then_shift_cuda``): ``[seg_ptr, seg_level,
    seg_npos, seg_tptr, term]`` (int32), the segments of :func:`~schedules.segments.plan_segments` with
    :func:`cuda_lane_dtype` sums; a term is ``c << 16 | kh << 8 | kw`` (the kernel reads the int32 NCHW
    activations and checks the padding itself). ``spec`` may be a :class:`DenseSpec`: a term is then the
    input index ``k``."""
    c = np.asarray(codes)
    plan = plan_segments(c.reshape(c.shape[0], -1), x_absmax, cuda_lane_dtype(x_absmax))
    k = plan.term_index.astype(np.int64)
    if isinstance(spec, DenseSpec):
        term = k
    else:
        if spec.kernel_h > 255 or spec.kernel_w > 255 or spec.group_in >= 2 ** 15:
            raise ValueError(f"kernel {spec.kernel_h}x{spec.kernel_w} or {spec.group_in} input channels per "
                             "group do not fit a CUDA term (c < 2**15, kh and kw < 256)")
        taps = spec.kernel_h * spec.kernel_w
        term = ((k // taps) << CUDA_TERM_C_SHIFT) | (((k % taps) // spec.kernel_w) << CUDA_TERM_KH_SHIFT) | (
            k % spec.kernel_w)
    i32 = lambda a: np.ascontiguousarray(np.asarray(a, np.int32))  # noqa: E731
    return [plan.seg_ptr, plan.seg_level, plan.seg_npos, plan.seg_tptr, i32(term)]
