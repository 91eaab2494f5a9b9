"""Adder kernels (AdderNet ``y = -Σ|x - w|``): TE compute, x86/CUDA schedules, and an x86 ``vpsadbw`` kernel.

Numerics (equal to ``shiftcomp.reference`` bit for bit in fixed point)::

    acc[o] = 0 - Σ_k max(d, 0 - d),  d = x_q[k] - w_q[o,k]     exact, in acc_dtype (int32 | int64)
    out[o] = float32(acc[o]) * 2**-F  [+ bias[o]]               float32; the scale is exact

The data path is subtract, absolute value as ``max(d, 0 - d)`` and add: no multiply. ``d`` is formed in
``acc_dtype``: the accumulator bound ``Σ_k (max|x_q| + |w_q|)`` bounds every single difference, so an
``int32`` accumulator also holds every ``d``. ``float32(acc) * 2**-F`` is exact (``float32(acc)`` has at most
24 significant bits, ``F <= 32``, no underflow), so an FMA contraction with the bias changes nothing.

Every conv is computed on the padded input, so a padded position contributes ``-|w|``. A dense layer is
the 1x1 convolution of the ``(1, K, 1, M)`` image (the lowering reshapes around it), so one kernel family
serves both.

Kernels (all take ``X_q, W, bias, out``; ``bias`` is always present, zeros when the layer has none):

* :func:`adder_conv2d` (plain): ``X_q`` int32 NCHW (float32 in float mode), ``W`` ``(O, C/G, KH, KW)`` in
  the narrowest integer type holding the weights (float32 in float mode). Scheduled for x86
  (:func:`schedule_x86`: vectors over output pixels, register accumulators) and CUDA (:func:`schedule_cuda`).
* :func:`adder_conv2d_psadbw` (x86, 8-bit operands, any stride and groups): operands offset by +128 to
  ``uint8`` (``|a - b|`` is offset invariant; a padded ``x = 0`` becomes 128), input repacked in the kernel
  into channel blocks of 8 (per group) over flat padded positions of each stride phase, so the 32 bytes at
  positions ``p .. p+3`` of one block are 4 output pixels x 8 channels; ``vpsadbw`` against one tap's 8
  weight bytes broadcast to 4 lanes gives 4 pixels' partial sums in 4 ``uint64`` lanes -- no horizontal
  reduction. Weights are packed once at compile time (:func:`psadbw_weights`). With AVX-512BW the kernel
  uses the 64-byte form. Its epilogue scales by subtracting ``F`` from the float32 exponent field, so it has no multiply at all.
  ``"auto"`` takes it unless a grouped conv has fewer than 8 channels per group
  (:func:`psadbw_preferred`: the plain kernel is faster when most of the 8 byte lanes would be padding).

* :func:`adder_conv2d_vsadu4` (CUDA, 8-bit operands, any geometry): 4 channels of ``x + 128`` per ``uint32``
  word and ``__vsadu4`` (sum of the 4 byte absolute differences) per word; weights packed at compile time
  (:func:`vsadu4_weights`).

Float mode (``spec.frac_bits is None``): ``acc = 0 - Σ|x - w|`` accumulated in float32 (checked against a
float64 reference within the summation bound), ``out = acc + bias``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np
import tvm
from tvm import s_tir, te, tirx
from tvm.script import tirx as T

from .adder_layout import psadbw_weights, vsadu4_weights

__all__ = ["AdderSpec", "adder_conv2d", "schedule_x86", "schedule_cuda", "adder_conv2d_psadbw", "psadbw_weights",
           "psadbw_applicable", "psadbw_preferred", "PSAD_MIN_GROUP_CHANNELS", "adder_conv2d_vsadu4",
           "vsadu4_weights", "vsadu4_applicable", "weight_dtype", "build_adder_kernel", "PSAD_ISAS"]

#: vpsadbw variants: intrinsic name and pixels (uint64 lanes) per vector
PSAD_ISAS = {"avx2": ("llvm.x86.avx2.psad.bw", 4), "avx512": ("llvm.x86.avx512.psad.bw.512", 8)}


@dataclasses.dataclass(frozen=True)
class AdderSpec:
    """One adder-conv kernel instance (NCHW, PyTorch conv geometry, zero padding).

    Attributes:
        batch, in_channels, height, width: input ``(N, C, H, W)``.
        out_channels, kernel_h, kernel_w: weights ``(O, C/G, KH, KW)``.
        stride, padding ``(top, left, bottom, right)``, dilation, groups: geometry.
        frac_bits: ``F`` (fixed point) or ``None`` (float mode).
        acc_dtype: ``"int32"`` / ``"int64"`` (fixed point), ignored in float mode.
        x_bits, w_bits: bit widths of ``x_q`` and ``w_q`` (the ``vpsadbw`` kernel needs both ``<= 8``).
        w_dtype: storage dtype of the plain kernel's weights.
    """

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    frac_bits: Optional[int] = 0
    acc_dtype: str = "int32"
    x_bits: int = 32
    w_bits: int = 32
    w_dtype: str = "int32"

    def __post_init__(self) -> None:
        if self.acc_dtype not in ("int32", "int64"):
            raise ValueError(f"acc_dtype must be int32 or int64, got {self.acc_dtype!r}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"channels {self.in_channels}->{self.out_channels} not divisible by groups={self.groups}")
        oh, ow = self.out_hw
        if oh < 1 or ow < 1:
            raise ValueError(f"empty adder conv output {oh}x{ow} for {self}")

    @property
    def float_mode(self) -> bool:
        return self.frac_bits is None

    @property
    def out_hw(self) -> Tuple[int, int]:
        (sh, sw), (dh, dw) = self.stride, self.dilation
        t, l, b, r = self.padding
        return ((self.height + t + b - dh * (self.kernel_h - 1) - 1) // sh + 1,
                (self.width + l + r - dw * (self.kernel_w - 1) - 1) // sw + 1)

    @property
    def x_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> Tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, self.kernel_h, self.kernel_w)

    @property
    def out_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.out_channels) + self.out_hw


def weight_dtype(bits: int) -> str:
    """Narrowest signed integer dtype holding ``bits``-bit weights."""
    return "int8" if bits <= 8 else "int16" if bits <= 16 else "int32"


def _scale_const(frac_bits: int) -> tirx.PrimExpr:
    return tirx.const(float(np.float32(2.0 ** -int(frac_bits))), "float32")


# ---------------------------------------------------------------------------------------------- plain
def adder_conv2d(spec: AdderSpec) -> tvm.tirx.PrimFunc:
    """Unscheduled adder-conv PrimFunc ``(X_q, W, bias f32 (O,), out f32 (N, O, OH, OW))`` (blocks ``pad``,
    ``acc``, ``out``); see the module docstring."""
    N, C, H, Wd = spec.x_shape
    O, Cg, KH, KW = spec.weight_shape
    OH, OW = spec.out_hw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    pt, pl, pb, pr = spec.padding
    Og = O // spec.groups
    fm = spec.float_mode
    xdt = "float32" if fm else "int32"
    adt = "float32" if fm else spec.acc_dtype
    X = te.placeholder((N, C, H, Wd), xdt, name="X_q")
    Wt = te.placeholder((O, Cg, KH, KW), "float32" if fm else spec.w_dtype, name="W")
    B = te.placeholder((O,), "float32", name="bias")
    HP = max(pt + H + pb, (OH - 1) * sh + (KH - 1) * dh + 1)
    WP = max(pl + Wd + pr, (OW - 1) * sw + (KW - 1) * dw + 1)

    def pad_fn(n, c, h, w):
        cond = [h >= pt, h < pt + H, w >= pl, w < pl + Wd]
        return tirx.if_then_else(tirx.all(*cond), X[n, c, h - pt, w - pl], tirx.const(0, xdt))

    Xp = te.compute((N, C, HP, WP), pad_fn, name="pad")
    ry, rx, rc = te.reduce_axis((0, KH), "ry"), te.reduce_axis((0, KW), "rx"), te.reduce_axis((0, Cg), "rc")
    zero = tirx.const(0, adt)

    def acc_fn(n, o, oh, ow):
        cidx = rc if spec.groups == 1 else (o // Og) * Cg + rc
        xv = Xp[n, cidx, oh * sh + ry * dh, ow * sw + rx * dw].astype(adt)
        d = xv - Wt[o, rc, ry, rx].astype(adt)
        return te.sum(tirx.max(d, zero - d), axis=[ry, rx, rc])

    acc = te.compute((N, O, OH, OW), acc_fn, name="acc")

    def out_fn(n, o, oh, ow):
        if fm:
            return (zero - acc[n, o, oh, ow]) + B[o]
        neg = (tirx.const(0, adt) - acc[n, o, oh, ow]).astype("float32")
        return neg * _scale_const(spec.frac_bits) + B[o]

    out = te.compute((N, O, OH, OW), out_fn, name="out")
    return te.create_prim_func([X, Wt, B, out], index_dtype_override="int64").without_attr("global_symbol")


def _divisor(n: int, lo: int, hi: int) -> Optional[int]:
    for d in range(min(hi, n), lo - 1, -1):
        if n % d == 0:
            return d
    return None


def schedule_x86(prim: tvm.tirx.PrimFunc, spec: AdderSpec) -> tvm.tirx.PrimFunc:
    """x86 schedule of :func:`adder_conv2d`: a vector of output pixels along ``ow`` (or of output channels
    when the rows are short) in registers, the reduction outside it, parallel over the outer tiles."""
    sch = s_tir.Schedule(prim)
    acc, out = sch.get_sblock("acc"), sch.get_sblock("out")
    n, o, oh, ow, ry, rx, rc = sch.get_loops(acc)
    OH, OW = spec.out_hw
    lanes = 8 if spec.acc_dtype == "int64" and not spec.float_mode else 16
    if OW >= 8:
        vl = lanes if OW % lanes == 0 else (_divisor(OW, 4, lanes) or min(lanes, OW))
        oc = _divisor(spec.out_channels, 1, 4) or 1
        oo, oi = sch.split(o, [None, oc])
        owo, owi = sch.split(ow, [None, vl])
        sch.reorder(n, oo, oh, owo, ry, rx, rc, oi, owi)
        outer = sch.fuse(n, oo, oh)
        sch.unroll(oi)
        sch.vectorize(owi)
        inner_anchor = owo
    else:
        O = spec.out_channels
        vl = lanes if O % lanes == 0 else (_divisor(O, 4, lanes) or min(lanes, O))
        oo, oi = sch.split(o, [None, vl])
        sch.reorder(n, oh, ow, oo, ry, rx, rc, oi)
        outer = sch.fuse(n, oh, ow, oo)
        sch.vectorize(oi)
        inner_anchor = outer
    sch.parallel(outer)
    sch.set_scope(acc, 0, "local")
    init = sch.decompose_reduction(acc, ry)
    try:
        sch.vectorize(sch.get_loops(init)[-1])
    except Exception:  # noqa: BLE001 - already vectorised
        pass
    sch.reverse_compute_at(out, inner_anchor)
    pad = sch.get_sblock("pad")
    ploops = sch.get_loops(pad)
    sch.parallel(sch.fuse(*ploops[:2]))
    return sch.mod["main"]


def schedule_cuda(prim: tvm.tirx.PrimFunc, spec: AdderSpec, threads: int = 128) -> tvm.tirx.PrimFunc:
    """CUDA schedule of :func:`adder_conv2d` / :func:`adder_conv2d_vsadu4`: one thread per output element (and
    per padded/packed input element)."""
    sch = s_tir.Schedule(prim)

    def bind(block):
        loops = sch.get_loops(block)
        fused = sch.fuse(*loops[:4])
        extent = int(sch.get(fused).extent)
        bx, tx = sch.split(fused, [None, max(1, min(threads, extent))])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        return tx

    try:
        first = sch.get_sblock("pad")
    except Exception:  # noqa: BLE001 - the __vsadu4 kernel packs instead of padding
        first = sch.get_sblock("pack")
    bind(first)
    acc = sch.get_sblock("acc")
    tx = bind(acc)
    sch.set_scope(acc, 0, "local")
    sch.reverse_compute_at(sch.get_sblock("out"), tx)
    return sch.mod["main"]


# ---------------------------------------------------------------------------------------------- vpsadbw
def psadbw_applicable(spec: AdderSpec) -> bool:
    """True when the ``vpsadbw`` kernel computes ``spec`` exactly: fixed point, 8-bit operands (any stride,
    dilation, padding and groups)."""
    return not spec.float_mode and spec.x_bits <= 8 and spec.w_bits <= 8


#: fewest channels per group for which ``"auto"`` picks ``vpsadbw`` in a grouped conv (8 byte lanes per tap;
#: experiments/bench_adder.py: at 4 channels per group and below the plain kernel is faster)
PSAD_MIN_GROUP_CHANNELS = 8


def psadbw_preferred(spec: AdderSpec) -> bool:
    """True when ``build_adder_kernel(..., "auto")`` uses ``vpsadbw`` on x86: :func:`psadbw_applicable`, and
    ``groups == 1`` or at least :data:`PSAD_MIN_GROUP_CHANNELS` channels per group."""
    return psadbw_applicable(spec) and (spec.groups == 1
                                        or spec.in_channels // spec.groups >= PSAD_MIN_GROUP_CHANNELS)


def _psad_geometry(spec: AdderSpec, lanes: int, pvec: int):
    """Row length ``WP`` of one stride phase, positions per block ``PB``, computed positions ``npr`` and
    positions per (channel block, phase) ``L``."""
    OH, OW = spec.out_hw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    WP = OW + (spec.kernel_w - 1) * dw // sw                              # output row + the widest tap offset
    PB = lanes * pvec
    npr = -(-(OH * WP) // PB) * PB                                         # computed positions, whole blocks
    maxoff = (spec.kernel_h - 1) * dh // sh * WP + (spec.kernel_w - 1) * dw // sw
    L = npr + maxoff
    return WP, PB, npr, L


def adder_conv2d_psadbw(spec: AdderSpec, isa: str = "avx2", pvec: Optional[int] = None,
                        ob: Optional[int] = None) -> tvm.tirx.PrimFunc:
    """The ``vpsadbw`` adder-conv PrimFunc ``(X_q int32 NCHW, W uint64 (psadbw_weights), bias f32 (O,),
    out f32 (N, O, OH, OW))`` for ``isa`` in :data:`PSAD_ISAS`; see the module docstring.

    Stride ``(sh, sw)``: the padded input is repacked as ``sh * sw`` phase images (phase ``(py, px)`` holds
    padded rows ``py, py + sh, ...`` and columns ``px, px + sw, ...``), so the taps of consecutive output
    pixels are consecutive positions of one phase and one unaligned load still covers ``LN`` pixels. Groups:
    each group's channels get their own blocks of 8; a register tile of ``ob`` output channels stays
    inside one group.

    ``pvec`` pixel vectors x ``ob`` output channels are accumulated in registers (default 3 x 2, or 4 x 1
    when the channels per group are odd).
    """
    if not psadbw_applicable(spec):
        raise ValueError(f"the vpsadbw kernel needs 8-bit fixed-point operands: {spec}")
    intrin, LN = PSAD_ISAS[isa]
    O, G = spec.out_channels, spec.groups
    Og = O // G
    if ob is None:
        ob = 2 if Og % 2 == 0 else 1
    if pvec is None:
        pvec = 3 if ob == 2 else 4
    if Og % ob:
        raise ValueError(f"ob={ob} must divide the output channels per group, {Og}")
    N, C, H, Wd = spec.x_shape
    Cg = C // G
    OH, OW = spec.out_hw
    KH, KW = spec.kernel_h, spec.kernel_w
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    pt, pl, _, _ = spec.padding
    C8 = -(-Cg // 8)                                                       # channel blocks per group
    S = sh * sw                                                            # stride phases
    TAPS = KH * KW
    WP, PB, npr, L = _psad_geometry(spec, LN, pvec)
    NB, NO = npr // PB, O // ob
    ACC = pvec * ob * LN
    out_dt = spec.acc_dtype
    exp_step = tirx.const(int(spec.frac_bits) << 23, "int32")

    def scaled(f):
        # float32(acc) * 2**-F as an exponent-field subtraction: f is 0 or an integer >= 1 in magnitude, so
        # the result (>= 2**-32) is normal and exact; no multiply anywhere in this kernel
        bits = tirx.reinterpret("int32", f)
        return tirx.reinterpret("float32", tirx.Select(f == tirx.const(0.0, "float32"), bits, bits - exp_step))

    def sad(xbuf, base, wq):
        return tirx.call_llvm_pure_intrin(
            f"int64x{LN}", intrin, tirx.BufferLoad(xbuf, [tirx.Ramp(base, 1, 8 * LN)]),
            tirx.reinterpret(f"uint8x{8 * LN}", tirx.Broadcast(wq, LN)))

    @T.prim_func(private=True)
    def kernel(x: T.Buffer((N, C, H, Wd), "int32"), w: T.Buffer((O * C8 * TAPS,), "uint64"),
               bias: T.Buffer((O,), "float32"), out: T.Buffer((N, O, OH, OW), "float32")):
        T.func_attr({"tir.noalias": True})
        xp = T.alloc_buffer((G * C8 * S * L * 8,), "uint8")
        for n in range(N):
            for cb, ph, pos in T.grid(G * C8, S, L):
                for ci in T.vectorized(8):
                    cl = T.meta_var(cb % C8 * 8 + ci)                      # channel within the group
                    hp = T.meta_var(pos // WP * sh + ph // sw)            # padded row and column
                    wp = T.meta_var(pos % WP * sw + ph % sw)
                    xp[((cb * S + ph) * L + pos) * 8 + ci] = T.if_then_else(
                        cl < Cg and hp >= pt and hp < pt + H and wp >= pl and wp < pl + Wd,
                        T.Cast("uint8", x[n, cb // C8 * Cg + T.min(cl, Cg - 1), T.min(T.max(hp - pt, 0), H - 1),
                                          T.min(T.max(wp - pl, 0), Wd - 1)] + 128),
                        T.uint8(128))
            for a0 in T.parallel(NO):
                for a1 in range(NB):
                    acc = T.alloc_buffer((ACC,), "int64", scope="local")
                    for i in T.unroll(pvec):
                        for j in T.unroll(ob):
                            for l in T.vectorized(LN):
                                acc[(i * ob + j) * LN + l] = T.int64(0)
                    for cb in range(C8):
                        for ky in range(KH):
                            for kx in T.unroll(KW):
                                for j in T.unroll(ob):
                                    for i in T.unroll(pvec):
                                        acc[T.ramp((i * ob + j) * LN, 1, LN)] = acc[T.ramp((i * ob + j) * LN, 1, LN)] + \
                                            sad(xp, ((((a0 * ob) // Og * C8 + cb) * S + ky * dh % sh * sw
                                                      + kx * dw % sw) * L + a1 * PB + i * LN + ky * dh // sh * WP
                                                     + kx * dw // sw) * 8,
                                                w[((a0 * ob + j) * C8 + cb) * TAPS + ky * KW + kx])
                    for i in T.unroll(pvec):
                        for j in T.unroll(ob):
                            for l in range(LN):
                                p = T.meta_var(a1 * PB + i * LN + l)
                                if p < OH * WP and p % WP < OW:
                                    out[n, a0 * ob + j, p // WP, p % WP] = scaled(
                                        T.Cast("float32", T.Cast(out_dt, T.int64(0) - acc[(i * ob + j) * LN + l]))
                                    ) + bias[a0 * ob + j]

    return kernel


# ---------------------------------------------------------------------------------------------- CUDA __vsadu4
def vsadu4_applicable(spec: AdderSpec) -> bool:
    """True when the CUDA ``__vsadu4`` kernel computes ``spec`` exactly: fixed point, 8-bit operands."""
    return not spec.float_mode and spec.x_bits <= 8 and spec.w_bits <= 8


def adder_conv2d_vsadu4(spec: AdderSpec) -> tvm.tirx.PrimFunc:
    """Unscheduled CUDA adder conv with ``__vsadu4`` (sum of 4 byte absolute differences): ``(X_q int32 NCHW,
    W uint32 (vsadu4_weights), bias, out)``. Blocks ``pack`` (4 channels of ``x + 128`` per word, padded
    positions 128), ``acc`` (``Σ __vsadu4``) and ``out``."""
    if not vsadu4_applicable(spec):
        raise ValueError(f"the __vsadu4 kernel needs 8-bit fixed-point operands: {spec}")
    N, C, H, Wd = spec.x_shape
    O, Cg, KH, KW = spec.weight_shape
    G, Og, C4 = spec.groups, O // spec.groups, -(-(spec.in_channels // spec.groups) // 4)
    OH, OW = spec.out_hw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    pt, pl, pb, pr = spec.padding
    HP = max(pt + H + pb, (OH - 1) * sh + (KH - 1) * dh + 1)
    WP = max(pl + Wd + pr, (OW - 1) * sw + (KW - 1) * dw + 1)
    X = te.placeholder((N, C, H, Wd), "int32", name="X_q")
    Wt = te.placeholder((O, C4, KH, KW), "uint32", name="W")
    B = te.placeholder((O,), "float32", name="bias")
    u32 = lambda v: tirx.const(v, "uint32")  # noqa: E731

    def byte(n, g, c, h, w):
        ok = tirx.all(c < Cg, h >= pt, h < pt + H, w >= pl, w < pl + Wd)
        xv = X[n, g * Cg + tirx.min(c, Cg - 1), tirx.min(tirx.max(h - pt, 0), H - 1),
               tirx.min(tirx.max(w - pl, 0), Wd - 1)]
        return tirx.if_then_else(ok, (xv + 128).astype("uint32"), u32(128))

    def pack_fn(n, g, q, h, w):
        word = byte(n, g, q * 4, h, w)
        for i in range(1, 4):
            word = word | (byte(n, g, q * 4 + i, h, w) << u32(8 * i))
        return word

    Xp = te.compute((N, G, C4, HP, WP), pack_fn, name="pack")
    ry, rx, rq = te.reduce_axis((0, KH), "ry"), te.reduce_axis((0, KW), "rx"), te.reduce_axis((0, C4), "rq")
    adt = spec.acc_dtype

    def acc_fn(n, o, oh, ow):
        sad = tirx.call_pure_extern("uint32", "__vsadu4", Xp[n, o // Og, rq, oh * sh + ry * dh, ow * sw + rx * dw],
                                    Wt[o, rq, ry, rx])
        return te.sum(sad.astype(adt), axis=[ry, rx, rq])

    acc = te.compute((N, O, OH, OW), acc_fn, name="acc")
    out = te.compute((N, O, OH, OW), lambda n, o, oh, ow: (tirx.const(0, adt) - acc[n, o, oh, ow]).astype("float32")
                     * _scale_const(spec.frac_bits) + B[o], name="out")
    return te.create_prim_func([X, Wt, B, out], index_dtype_override="int64").without_attr("global_symbol")


# ---------------------------------------------------------------------------------------------- dispatch
def _has_avx512bw(target: tvm.target.Target) -> bool:
    feats = ""
    for key in ("mattr", "mcpu"):
        try:
            v = target.attrs.get(key)
        except Exception:  # noqa: BLE001
            v = None
        if v is not None:
            feats += " " + (",".join(str(a) for a in v) if not isinstance(v, str) else v)
    if "avx512bw" in feats:
        return True
    try:
        from tvm.target import codegen

        return bool(codegen.target_has_features("avx512bw", target))
    except Exception:  # noqa: BLE001
        return False


def build_adder_kernel(spec: AdderSpec, target: tvm.target.Target, kernel: str = "auto") -> Tuple[tvm.tirx.PrimFunc, str]:
    """The scheduled adder kernel for ``target`` and the name of the variant used.

    ``kernel``: ``"auto"`` (x86: ``vpsadbw`` when :func:`psadbw_preferred`; CUDA: ``__vsadu4`` when
    :func:`vsadu4_applicable`; else plain), ``"plain"``, ``"psadbw"`` or ``"vsadu4"``. Variant names:
    ``"plain"``, ``"psadbw-avx2"``, ``"psadbw-avx512"``, ``"vsadu4-cuda"``, ``"plain-<gpu kind>"``.
    """
    kind = target.kind.name
    if kind == "llvm":
        use_psad = kernel == "psadbw" or (kernel == "auto" and psadbw_preferred(spec))
        if use_psad:
            isa = "avx512" if _has_avx512bw(target) else "avx2"
            return adder_conv2d_psadbw(spec, isa), "psadbw-" + isa
        return schedule_x86(adder_conv2d(spec), spec), "plain"
    if kernel == "psadbw":
        raise ValueError(f"the vpsadbw kernel is x86 only, target is {kind!r}")
    if kind == "cuda" and kernel in ("auto", "vsadu4") and vsadu4_applicable(spec):
        return schedule_cuda(adder_conv2d_vsadu4(spec), spec), "vsadu4-cuda"
    return schedule_cuda(adder_conv2d(spec), spec), "plain-" + kind
