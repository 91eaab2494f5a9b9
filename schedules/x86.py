"""x86 (LLVM) schedules of the shift kernels in :mod:`schedules.compute`.

Both schedules vectorise the term ``sign(c) * (x << (|c| - 1))`` of a code ``c`` (the exact form per
kernel is at the end of this docstring) with a per-lane variable shift (AVX-512/AVX2 ``vpsllvd``/``vpsllvq``), keep the accumulators of a register tile in a
``local`` buffer (promoted to registers by LLVM), run the outer tiles in parallel, and compute the float
epilogue per tile (``reverse_compute_at``) while the accumulators are hot.

* dense ``acc (M, NBLK*NB)``: tile ``TI`` rows x one column block (``JB`` vectors of ``VL`` lanes,
  ``VL`` = 16 int32 / 8 int64 lanes; ``NB`` is a multiple of 8 so no tail), loop order
  ``[io, jo] (parallel) -> k -> ii (unrolled) -> jb (unrolled) -> ji (vector)``, or, fixed point with
  ``NB % 16 == 0`` (``DENSE_WIDE_VECTOR``), ``jb`` and ``ji`` fused into one ``NB``-lane vector: the ``NB`` codes of one
  ``k`` (contiguous, the block is one sequential stream) are decoded once and shared by the ``TI`` rows;
  ``x[i, k]`` is broadcast; at most 16 accumulator registers.
* conv2d, ``Og_pad >= 8`` ("channel vectors"): vector over the group's output channels, a rectangular tile
  of ``th x tw <= CONV_PIXEL_TILE`` (16) output pixels unrolled so one decoded code vector serves all of them; the zero
  padded input (block ``pad``) is materialised once, in NHWC order so the innermost ``rc`` loop reads
  consecutive words; parallel over ``(n, g, og-block, pixel-block)``.
* conv2d, ``Og_pad < 8`` (depthwise and narrow groups): vector over output columns ``ow`` (the code is a
  scalar per ``(ry, rx, rc)``, decoded once and broadcast), ``TH`` output rows unrolled; parallel over
  ``(n, g, og, oh-block)``.

Any shape works: non-dividing tiles get predicates on unrolled (not vectorised) loops, and vector loops are
picked to divide their extent (``N_pad``/``Og_pad`` are multiples of 8; for ``ow``: 16 or 8 lanes when they
divide ``OW``, else ``OW`` itself up to 16, else a divisor of ``OW`` in 4..16, else a predicated 16-lane
loop, which TVM scalarises -- correct, slower).

The fixed-point term (see :func:`schedules.compute._term_int`): conv kernels read ``x`` and ``-x`` from
the two materialised padded stages ``pad`` / ``negpad`` (NHWC), select the source by the code's sign with
a masked broadcast load, shift (``vpsllvd``) and subtract under the nonzero-code mask: 3 vector ALU uops per
16 terms plus the code decode shared by the ``CONV_PIXEL_TILE`` pixels; dense decodes each code vector in
bytes (one 64-lane vector per column block) and adds/subtracts under the sign masks (8.5 uops per 16
terms, every code used once at batch 1).
"""
from __future__ import annotations

from typing import Optional

import tvm
from tvm import s_tir

from .compute import Conv2dSpec, DenseSpec

__all__ = ["schedule_dense", "schedule_conv2d", "dense_schedule", "conv2d_schedule"]

#: output pixels per register tile of the channel-vector conv schedule (one accumulator vector each; with
#: the term's 3-4 temporaries this stays within AVX-512's 32 vector registers)
CONV_PIXEL_TILE = 16
#: dense (fixed point, NB a multiple of 16): vectorise a whole column block (up to 64 lanes) as one vector,
#: so LLVM decodes the 64 int8 codes with full-width byte ops instead of one xmm per 16 lanes and uses
#: masked vpaddd/vpsubd (fewer vector uops per term than the per-16-lane form)
DENSE_WIDE_VECTOR = True


def _largest_divisor(n: int, lo: int, hi: int) -> Optional[int]:
    for d in range(min(hi, n), lo - 1, -1):
        if n % d == 0:
            return d
    return None


def _lanes(acc_dtype: str, width: int) -> int:
    """Vector lanes over an axis of extent ``width`` (a multiple of 8): 16 for int32/float32, 8 for int64."""
    if acc_dtype == "int64":
        return 8
    return 16 if width % 16 == 0 else 8


def _acc_dtype(prim: tvm.tirx.PrimFunc, spec) -> str:
    """Accumulator dtype actually used by ``prim`` (float32 for the float-activation kernels)."""
    x_dtype = str(prim.params[0].ty.dtype)
    return "float32" if x_dtype == "float32" else spec.acc_dtype


def _vectorize_init(sch: s_tir.Schedule, init_block) -> None:
    loops = sch.get_loops(init_block)
    # the innermost init loop mirrors the vectorised update loop; make sure it is vectorised too
    try:
        sch.vectorize(loops[-1])
    except Exception:  # already vectorised (decompose_reduction kept the annotation)
        pass


def dense_schedule(prim: tvm.tirx.PrimFunc, spec: DenseSpec, target: Optional[tvm.target.Target] = None
                   ) -> s_tir.Schedule:
    """Schedule a :func:`~schedules.compute.shift_dense` / ``shift_dense_float`` PrimFunc for x86.

    Args:
        prim: the unscheduled PrimFunc (blocks ``acc``, ``out``).
        spec: its :class:`DenseSpec`.
        target: the LLVM target (unused today: the tiles fit AVX-512 and AVX2 alike).

    Returns:
        The ``tvm.s_tir.Schedule`` (``.mod["main"]`` is the scheduled PrimFunc, ``.trace`` its trace).
    """
    M, NB = spec.batch, spec.n_block
    acc_dt = _acc_dtype(prim, spec)
    sch = s_tir.Schedule(prim)
    acc = sch.get_sblock("acc")
    out = sch.get_sblock("out")
    i, j, k = sch.get_loops(acc)
    vl = _lanes(acc_dt, NB)
    jb_n = NB // vl                        # one column block of the code layout per tile
    regs = jb_n * (2 if acc_dt == "int64" and vl == 16 else 1)
    ti = max(1, min(M, 16 // regs))        # <= 16 accumulator registers
    if M > ti:
        d = _largest_divisor(M, max(1, ti // 2), ti)
        ti = d if d is not None else ti
    io, ii = sch.split(i, [None, ti])
    jo, jb, ji = sch.split(j, [None, jb_n, vl])
    sch.reorder(io, jo, k, ii, jb, ji)
    outer = sch.fuse(io, jo)
    if DENSE_WIDE_VECTOR and jb_n > 1 and NB % 16 == 0 and acc_dt != "float32":
        ji = sch.fuse(jb, ji)
    else:
        sch.unroll(jb)
    sch.vectorize(ji)
    sch.unroll(ii)
    sch.parallel(outer)
    sch.set_scope(acc, 0, "local")
    init = sch.decompose_reduction(acc, k)
    _vectorize_init(sch, init)
    sch.reverse_compute_at(out, outer)
    return sch


def _pad_blocks(sch: s_tir.Schedule) -> list:
    """The padded-input blocks: ``pad`` and, in fixed-point mode, ``negpad`` (``0 - pad``)."""
    blocks = [sch.get_sblock("pad")]
    if "negpad" in sch.mod["main"].script():
        blocks.append(sch.get_sblock("negpad"))
    return blocks


def _schedule_pad(sch: s_tir.Schedule, spec: Conv2dSpec, nhwc: bool) -> None:
    """Materialise the zero-padded input(s) at the root (parallel over rows), NHWC if asked."""
    for pad in _pad_blocks(sch):
        if nhwc:
            sch.transform_layout(pad, ("write", 0), lambda n, c, h, w: (n, h, w, c))
            n, c, h, w = sch.get_loops(pad)
            sch.reorder(n, h, w, c)
            sch.parallel(sch.fuse(n, h))
        else:
            n, c, h, w = sch.get_loops(pad)
            sch.parallel(sch.fuse(n, c, h))


def conv2d_schedule(prim: tvm.tirx.PrimFunc, spec: Conv2dSpec, target: Optional[tvm.target.Target] = None
                    ) -> s_tir.Schedule:
    """Schedule a :func:`~schedules.compute.shift_conv2d` / ``shift_conv2d_float`` PrimFunc for x86.

    Args:
        prim: the unscheduled PrimFunc (blocks ``pad``, ``acc``, ``out``).
        spec: its :class:`Conv2dSpec`.
        target: the LLVM target (unused today).

    Returns:
        The ``tvm.s_tir.Schedule`` (``.mod["main"]``: the scheduled PrimFunc; ``.trace``).
    """
    acc_dt = _acc_dtype(prim, spec)
    ogp = spec.group_out_padded
    OH, OW = spec.out_hw
    sch = s_tir.Schedule(prim)
    acc = sch.get_sblock("acc")
    out = sch.get_sblock("out")
    n, g, og, oh, ow, ry, rx, rc = sch.get_loops(acc)
    if ogp >= 8:
        # ---- channel vectors
        vl = _lanes(acc_dt, ogp)
        # a rectangular tile of th x tw output pixels (<= 8), unrolled: one decoded code vector serves
        # them all. (A tile of the fused oh*OW+ow axis that wraps a row is not rectangular and makes
        # reverse_compute_at's bounding box write pixels of the neighbouring tile.)
        tw = OW if OW < 8 else (_largest_divisor(OW, 4, 8) or 8)
        th = max(1, min(OH, CONV_PIXEL_TILE // tw))
        if th > 1:
            th = _largest_divisor(OH, max(1, th // 2), th) or th
        # channels innermost in the accumulator so a vector of lanes is contiguous (register-promotable)
        sch.transform_layout(acc, ("write", 0), lambda n_, g_, og_, oh_, ow_: (n_, g_, oh_, ow_, og_))
        ogo, ogi = sch.split(og, [None, vl])
        oho, ohi = sch.split(oh, [None, th])
        owo, owi = sch.split(ow, [None, tw])
        sch.reorder(n, g, ogo, oho, owo, ry, rx, rc, ohi, owi, ogi)
        outer = sch.fuse(n, g, ogo, oho, owo)
        sch.unroll(ohi)
        sch.unroll(owi)
        sch.vectorize(ogi)
        sch.parallel(outer)
        if spec.groups > 1 and ogp != spec.group_out:
            # The epilogue reads acc[n, o // Og, o % Og]; a tile of padded channels of group g would make
            # reverse_compute_at's bounding box over ``o`` reach into group g+1 (computed by another
            # task). So: accumulate in registers, write the tile back to a global acc, epilogue at root.
            wb = sch.cache_write(acc, 0, "local")
            sch.reverse_compute_at(wb, outer)
            init = sch.decompose_reduction(acc, ry)
            _vectorize_init(sch, init)
            loops = sch.get_loops(out)
            sch.parallel(sch.fuse(*loops[:3]))
        else:
            sch.set_scope(acc, 0, "local")
            init = sch.decompose_reduction(acc, ry)
            _vectorize_init(sch, init)
            sch.reverse_compute_at(out, outer)
        _schedule_pad(sch, spec, nhwc=True)
    else:
        # ---- spatial vectors over ow
        # at most one zmm per row (wider, odd-width vectors measured 3x slower: dw 144@56, 56 -> 8 lanes)
        if OW % 16 == 0:
            vl = 16
        elif OW % 8 == 0:
            vl = 8
        elif OW <= 16:
            vl = OW
        else:
            vl = _largest_divisor(OW, 4, 16) or 16
        th = _largest_divisor(OH, 1, 4) or 1
        if th == 1 and OH > 1:
            th = min(OH, 4)
        oho, ohi = sch.split(oh, [None, th])
        owo, owi = sch.split(ow, [None, vl])
        sch.reorder(n, g, og, oho, owo, ry, rx, rc, ohi, owi)
        outer = sch.fuse(n, g, og, oho)
        sch.vectorize(owi)
        sch.unroll(ohi)
        sch.parallel(outer)
        sch.set_scope(acc, 0, "local")
        init = sch.decompose_reduction(acc, ry)
        _vectorize_init(sch, init)
        sch.reverse_compute_at(out, owo)
        if any(spec.padding):
            _schedule_pad(sch, spec, nhwc=False)
        else:
            for pad in _pad_blocks(sch):
                sch.compute_inline(pad)
    return sch


def schedule_dense(prim: tvm.tirx.PrimFunc, spec: DenseSpec, target: Optional[tvm.target.Target] = None
                   ) -> tvm.tirx.PrimFunc:
    """The scheduled dense PrimFunc (same signature and attributes as ``prim``); see :func:`dense_schedule`."""
    return dense_schedule(prim, spec, target).mod["main"]


def schedule_conv2d(prim: tvm.tirx.PrimFunc, spec: Conv2dSpec, target: Optional[tvm.target.Target] = None
                    ) -> tvm.tirx.PrimFunc:
    """The scheduled conv2d PrimFunc (same signature and attributes as ``prim``); see :func:`conv2d_schedule`."""
    return conv2d_schedule(prim, spec, target).mod["main"]
