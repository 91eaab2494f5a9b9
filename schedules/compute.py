"""TE compute definitions of the shift kernels (target independent; schedules live in x86.py / cuda.py).

Numerics (docs/numerics.md, Shift layer) -- every kernel here equals ``shiftcomp.reference`` bit for bit::

    acc[o] = Σ_k sign[o,k] * (x_q[k] << (shift[o,k] - s0))       exact, in acc_dtype (int32 | int64)
    out[o] = float32(acc[o]) * float32(2**(s0 - F))  [+ bias[o]]   two float32 roundings, in this order

Weights arrive as one ``int8`` *code* per weight, ``code = sign * (shift - s0 + 1)``: 0 is a zero weight,
``|code| - 1`` (0..126) the shift above ``s0``, the sign of ``code`` the weight's sign. The data path of
one term uses only casts, shifts, xor, sub, and, compare/select and add -- no multiply:

    c = int(code) (sign-extended);  m = c >> (bits-1)            # 0 or -1 (arithmetic shift)
    a = (c ^ m) - m                                              # |code|
    s = (a - 1) & (bits - 1)                                     # shift count, always in [0, bits)
    conv:  v = select(c < 0, x, nx) << s;  term = 0 - select(a > 0, v, 0)    # nx = 0 - x (stage "negpad")
    dense: v = x << s;  term = select(c > 0, v, 0) - select(c < 0, v, 0)

No unary minus anywhere (TIR writes ``-v`` as ``v * -1``); ``(0 - x) << s == -(x << s)`` in two's
complement; ``0 - x`` is formed in ``acc_dtype`` (an int32 ``x`` is never INT32_MIN under an int32
accumulator bound; with int64 it may be, and ``-x`` then needs the 64 bits). See :func:`_term_int` for
why the two forms differ (what LLVM makes of ``acc + term`` on AVX-512).

The ``& (bits-1)`` guard keeps every shift count defined (LLVM/C: a count >= bits is UB, and vector code
evaluates every lane). It changes nothing for valid inputs: ``|code| - 1 >= bits`` can only occur with a
term that would overflow the accumulator (the pass's accumulator bound excludes it) or with ``x_q == 0``
(then ``0 << anything == 0``). The zero code gives count 31/63, discarded by the select.

Epilogue and FMA: LLVM (TVM sets ``AllowFPOpFusion=Fast``) and nvcc contract ``a * c + b`` into one
fused multiply-add, which rounds once instead of twice. That is harmless whenever ``float32(acc) * c`` is
exact: ``float32(acc)`` is an integer with at most 24 significant bits and ``c = 2**e`` with
``e = s0 - F >= -149`` (else ``c = 0``), so the product is always a multiple of ``2**-149`` that fits --
exact -- unless it overflows, which needs ``e > 128 - bits`` (``|float32(acc)| <= 2**(bits-1)``). Only
then (and only with a bias) the scaling is done by :func:`ldexp_f32_bits` (integer exponent arithmetic,
overflow to inf) so that no FMA can form; e.g. ``acc = 2**62, e = 66, bias = -FLT_MAX`` gives inf like the
reference, where an FMA would give ``2**104``.

Layouts (all row-major / C order):

* dense: ``X_q`` int32 ``(M, K)``; codes int8 ``(NBLK, K, NB)`` ("column blocks"): output column
  ``j = b * NB + jj`` uses ``codes[b, :, jj]``, with ``NB = dense_block(N) = min(64, N rounded up to a
  multiple of 8)`` and ``NBLK = ceil(N / NB)``; columns ``N .. NBLK*NB-1`` are zero codes. One block is a
  contiguous ``K x NB`` stream (64 codes = one cache line per ``k``), so a CPU register tile walks memory
  sequentially (the plain ``(K, N)`` layout touches a new 4 KiB page per ``k`` when ``N = 4096``:
  measured 10x slower) and the output axis vectorises with no tail. bias float32 ``(N,)``; out float32
  ``(M, N)``. Convert with :func:`dense_weight_codes` (PyTorch ``(N, K)`` shift/sign -> kernel codes).
* conv2d: ``X_q`` int32 ``(N, C, H, W)`` (NCHW); codes int8 ``(G, KH, KW, Cg, Og_pad)`` where
  ``G = groups``, ``Cg = C // G``, ``Og = O // G`` and ``Og_pad = conv2d_padded_og(Og)`` (``Og`` when
  ``Og < 8``, else ``Og`` rounded up to a multiple of 8; extra channels are zero codes). Output
  channel ``o = g * Og + og`` uses ``codes[g, :, :, :, og]``; bias float32 ``(O,)``; out float32
  ``(N, O, OH, OW)``. Convert with :func:`conv2d_weight_codes` (PyTorch ``(O, C/G, KH, KW)``).

PrimFunc parameters, in order: ``X_q, codes, [bias], out`` (bias only when ``spec.has_bias``).
Blocks: ``"pad"`` (conv only: zero-padded copy of ``X_q``), ``"negpad"`` (fixed-point conv only:
``0 - pad``, read by the term so ``-x`` is formed once per input element), ``"acc"`` (the exact reduction; dense
``(M, NBLK*NB)``, conv ``(N, G, Og_pad, OH, OW)``) and ``"out"`` (the float epilogue).

Float-activation mode (``shift_dense_float`` / ``shift_conv2d_float``, docs/numerics.md, Float activations):
``X`` is float32, ``term = ± ldexp(x, s0 + |code| - 1)`` computed by integer arithmetic on the
float32 bit pattern (:func:`ldexp_f32_bits`: zero, subnormal inputs/outputs with round-to-nearest-even,
overflow to inf, inf/nan pass through), negation by flipping the sign bit, accumulation in float32.
``frac_bits`` and ``acc_dtype`` of the spec are ignored there.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import tvm
from tvm import te, tirx

from .specs import (ACC_DTYPES, DENSE_BLOCK, LANE_PAD, Conv2dSpec, DenseSpec, conv2d_padded_og, dense_block,
                    dense_padded_n)

__all__ = [
    "DenseSpec", "Conv2dSpec", "shift_dense", "shift_conv2d", "shift_dense_float", "shift_conv2d_float",
    "dense_weight_codes", "conv2d_weight_codes", "weight_codes", "dense_codes_layout", "conv2d_codes_layout",
    "dense_block", "dense_padded_n", "conv2d_padded_og", "DENSE_BLOCK", "ldexp_f32_bits", "output_scale",
    "needs_exact_scale", "ACC_DTYPES", "LANE_PAD", "quantize_value", "cast_lanes",
]

_INT32_MIN = -(2 ** 31)


# ----------------------------------------------------------------------------------- weight codes
def weight_codes(shift: np.ndarray, sign: np.ndarray, s0: int) -> np.ndarray:
    """``code = sign * (shift - s0 + 1)`` (0 where ``sign == 0``), int8, same shape as the inputs.

    Args:
        shift: integer shifts (any int dtype, numpy or CPU torch tensor).
        sign: -1 / 0 / +1, same shape.
        s0: the layer's accumulator shift; every nonzero-sign weight needs ``shift >= s0``.

    Raises:
        ValueError: a nonzero weight with ``shift < s0`` or ``shift - s0 + 1 > 127`` (not an int8 code),
            or a sign outside {-1, 0, 1}.
    """
    sh = np.asarray(shift).astype(np.int64)
    sg = np.asarray(sign).astype(np.int64)
    if sh.shape != sg.shape:
        raise ValueError(f"shift {sh.shape} and sign {sg.shape} shapes differ")
    if np.any((sg != 0) & (sg != 1) & (sg != -1)):
        raise ValueError("sign must be in {-1, 0, +1}")
    mag = np.where(sg != 0, sh - int(s0) + 1, 0)
    nz = sg != 0
    if np.any(mag[nz] < 1):
        raise ValueError(f"a nonzero weight has shift < s0={s0}")
    if np.any(mag[nz] > 127):
        raise ValueError(f"shift - s0 + 1 = {int(mag[nz].max())} does not fit an int8 code (max 127); "
                         f"narrow the shift range")
    return (sg * mag).astype(np.int8)


def dense_codes_layout(codes_nk: np.ndarray) -> np.ndarray:
    """PyTorch-layout codes ``(N, K)`` -> kernel layout ``(NBLK, K, NB)`` (zero-code padded columns)."""
    c = np.asarray(codes_nk).astype(np.int8)
    n, k = c.shape
    nb, npad = dense_block(n), dense_padded_n(n)
    full = np.zeros((npad, k), np.int8)
    full[:n] = c
    return np.ascontiguousarray(full.reshape(npad // nb, nb, k).transpose(0, 2, 1))


def conv2d_codes_layout(codes_ocyx: np.ndarray, groups: int) -> np.ndarray:
    """PyTorch-layout codes ``(O, C/G, KH, KW)`` -> kernel layout ``(G, KH, KW, Cg, Og_pad)``."""
    c = np.asarray(codes_ocyx).astype(np.int8)
    o, cg, kh, kw = c.shape
    if o % groups:
        raise ValueError(f"out_channels {o} not divisible by groups {groups}")
    og = o // groups
    ogp = conv2d_padded_og(og)
    out = np.zeros((groups, kh, kw, cg, ogp), np.int8)
    out[..., :og] = c.reshape(groups, og, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    return out


def dense_weight_codes(shift: np.ndarray, sign: np.ndarray, s0: int) -> np.ndarray:
    """Kernel weight array for :func:`shift_dense`: int8 ``(NBLK, K, NB)`` from PyTorch ``(N, K)`` shift/sign."""
    return dense_codes_layout(weight_codes(shift, sign, s0))


def conv2d_weight_codes(shift: np.ndarray, sign: np.ndarray, s0: int, groups: int = 1) -> np.ndarray:
    """Kernel weight array for :func:`shift_conv2d`: int8 ``(G, KH, KW, Cg, Og_pad)`` from PyTorch
    ``(O, C/G, KH, KW)`` shift/sign."""
    return conv2d_codes_layout(weight_codes(shift, sign, s0), groups)


# ----------------------------------------------------------------------------------- scalar helpers
def _i32(v: int) -> tirx.PrimExpr:
    return tirx.const(int(v), "int32")


def ldexp_f32_bits(b: tirx.PrimExpr, e: tirx.PrimExpr) -> tirx.PrimExpr:
    """Bit pattern of ``ldexp(x, e)`` for the float32 ``x`` whose bits are the int32 ``b``; ``e`` int32.

    Exact ``x * 2**e`` rounded once to nearest-even float32: zero stays (signed) zero, subnormal inputs
    are normalised, results below the normal range are rounded into subnormals (or to zero), results
    above it become +-inf, inf/nan are returned unchanged. Integer ops only (and/or/xor/shift/add/sub,
    compare/select, count-leading-zeros): no float multiply, so nothing can be contracted into an FMA.
    Equals ``torch.ldexp(x, e)`` for every non-NaN ``x`` and ``e`` in ``[-149, 127]``. Valid for
    ``|e| < 2**30``.
    """
    sign = b & _i32(_INT32_MIN)
    a = b & _i32(0x7FFFFFFF)
    ex = a >> _i32(23)
    man = a & _i32(0x7FFFFF)
    sig = tirx.Select(ex != _i32(0), man | _i32(0x800000), man)       # x = sig * 2**(max(ex,1) - 150)
    lz = tirx.clz(sig | _i32(1)) - _i32(8)                              # 0..23 (normalises subnormals)
    sig2 = sig << lz                                                    # in [2**23, 2**24) unless x == 0
    er = tirx.max(ex, _i32(1)) - lz + e                                 # biased exponent of the result
    normal = sign | ((er & _i32(255)) << _i32(23)) | (sig2 & _i32(0x7FFFFF))
    inf = sign | _i32(0x7F800000)
    sh = tirx.min(tirx.max(_i32(1) - er, _i32(1)), _i32(25))           # right shift into a subnormal
    q = sig2 >> sh
    rem = sig2 & ((_i32(1) << sh) - _i32(1))
    half = _i32(1) << (sh - _i32(1))
    up = tirx.Select(tirx.Or(rem > half, tirx.And(rem == half, (q & _i32(1)) != _i32(0))), _i32(1), _i32(0))
    sub = sign | (q + up)
    res = tirx.Select(er >= _i32(255), inf, tirx.Select(er >= _i32(1), normal, sub))
    return tirx.Select(tirx.Or(ex == _i32(255), a == _i32(0)), b, res)


def output_scale(spec: Union[DenseSpec, Conv2dSpec]) -> Tuple[int, float]:
    """``(e, c)`` with ``e = s0 - F`` and ``c = float32(2**e)`` (0 below 2**-149, inf above 2**127)."""
    e = int(spec.s0) - int(spec.frac_bits)
    if e > 127:
        return e, math.inf
    if e < -149:
        return e, 0.0
    return e, float(np.float32(2.0 ** e))


def needs_exact_scale(spec: Union[DenseSpec, Conv2dSpec]) -> bool:
    """True when ``float32(acc) * 2**e + bias`` could differ between fused (FMA) and two-step rounding:
    with a bias, ``c`` finite and ``float32(acc) * c`` able to overflow (``128 - bits < e <= 127``)."""
    if not spec.has_bias:
        return False
    e, c = output_scale(spec)
    if c == 0.0 or math.isinf(c):
        return False
    bits = 32 if spec.acc_dtype == "int32" else 64
    return e > 128 - bits


def _f32_const(v: float) -> tirx.PrimExpr:
    """A float32 constant (exact: LLVM takes the value, the CUDA codegen prints it as a hex float such
    as ``0x1p-11f``; a ``reinterpret`` of an int literal does not compile in TVM's CUDA printer)."""
    return tirx.const(float(np.float32(v)), "float32")


def _epilogue(acc_val: tirx.PrimExpr, bias_val: Optional[tirx.PrimExpr], spec, exact: bool) -> tirx.PrimExpr:
    f = acc_val.astype("float32")
    e, c = output_scale(spec)
    if exact:
        y = tirx.reinterpret("float32", ldexp_f32_bits(tirx.reinterpret("int32", f), _i32(e)))
    elif c == 1.0:
        y = f
    elif c == 0.0:  # f * +0.0 == +-0 with the sign of f (TVM would fold `f * 0.0` to 0 and drop acc)
        y = tirx.reinterpret("float32", tirx.reinterpret("int32", f) & _i32(_INT32_MIN))
    else:
        y = f * _f32_const(c)
    return y + bias_val if bias_val is not None else y


def quantize_value(x: tirx.PrimExpr, int_bits: int, frac_bits: int, rounding: str,
                   qmax: Optional[int] = None) -> tirx.PrimExpr:
    """``clamp(round_mode(x * 2**F), qmin, qmax)`` as int32 (docs/numerics.md, Activations), for a float32
    scalar or vector ``x``: the one definition the quantise kernel (``passes.quantize_kernel``) and the
    quantising pack of ``schedules.sum_then_shift`` share, so that they agree bit for bit.

    ``rounding``: ``"nearest"`` (``nearbyint``: ties to even) or ``"floor"``; ``qmax``: a smaller upper clamp
    than ``2**(I+F-1) - 1`` (``numerics="deepshift"``), or ``None``. Up to 25 bits the clamp bounds are exact
    float32 values; wider formats clamp the top in int64 (``2**(I+F-1) - 1`` is not a float32)."""
    n = int(int_bits) + int(frac_bits)
    if not 1 <= n <= 32:
        raise ValueError(f"activation format Q({int_bits},{frac_bits}) has {n} bits; need 1..32")
    if rounding not in ("nearest", "floor"):
        raise ValueError(f"unknown rounding {rounding!r}")
    qmin, qmax = -(2 ** (n - 1)), (2 ** (n - 1) - 1 if qmax is None else min(int(qmax), 2 ** (n - 1) - 1))
    v = x * tirx.const(2.0 ** frac_bits, "float32")
    v = tirx.nearbyint(v) if rounding == "nearest" else tirx.floor(v)
    if n - 1 <= 24:
        v = tirx.max(tirx.min(v, tirx.const(float(qmax), "float32")), tirx.const(float(qmin), "float32"))
        return cast_lanes(v, "int32")
    v = tirx.max(tirx.min(v, tirx.const(float(2 ** (n - 1)), "float32")), tirx.const(float(qmin), "float32"))
    w = tirx.min(cast_lanes(v, "int64"), tirx.const(qmax, "int64"))
    return cast_lanes(w, "int32")


def cast_lanes(v: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """``v`` cast to the scalar type ``dtype`` lane by lane (a vector ``v`` keeps its lanes)."""
    lanes = int(v.ty.dtype.lanes)
    return v.astype(dtype if lanes == 1 else f"{dtype}x{lanes}")


def _term_int(x: tirx.PrimExpr, code: tirx.PrimExpr, acc_dtype: str,
              neg_x: Optional[tirx.PrimExpr] = None) -> tirx.PrimExpr:
    """``sign * (x << (|code| - 1))`` (0 for code 0) without multiply; see the module docstring.

    Two multiply-free forms, both chosen for what LLVM makes of ``acc + term`` on AVX-512:

    * ``neg_x`` given (conv: a materialised ``0 - x`` input stage): ``src = select(code < 0, x, -x)`` (the
      *negated* wanted source, picked before the shift: a masked broadcast load), ``v = src << s``,
      ``term = 0 - select(|code| > 0, v, 0)``: one masked ``vpsubd`` into the accumulator. 3 vector ALU
      uops per term vector (blend, ``vpsllvd``, masked sub); the code decode is shared by the pixel tile.
    * ``neg_x`` absent (dense, where every code is used once): ``v = x << s``,
      ``term = select(code > 0, v, 0) - select(code < 0, v, 0)`` (a zero-masked move + add and a masked
      sub; the decode runs in bytes). ``(0 - x) << s == -(x << s)`` in two's complement; ``x`` is never the
      most negative value (accumulator bound).
    """
    bits = 32 if acc_dtype == "int32" else 64
    zero = tirx.const(0, acc_dtype)
    c = code.astype(acc_dtype)
    m = c >> tirx.const(bits - 1, acc_dtype)
    a = (c ^ m) - m
    s = (a - tirx.const(1, acc_dtype)) & tirx.const(bits - 1, acc_dtype)
    xa = x.astype(acc_dtype)
    if neg_x is None:
        v = xa << s
        return tirx.Select(c > zero, v, zero) - tirx.Select(c < zero, v, zero)
    v = tirx.Select(c < zero, xa, neg_x.astype(acc_dtype)) << s
    return zero - tirx.Select(a > zero, v, zero)        # a = |code| > 0: the nonzero codes


def _term_float(x: tirx.PrimExpr, code: tirx.PrimExpr, s0: int) -> tirx.PrimExpr:
    """``sign * ldexp(x, s0 + |code| - 1)`` (0.0 for code 0) by integer ops on the float32 bits."""
    c = code.astype("int32")
    m = c >> _i32(31)
    e = ((c ^ m) - m) + _i32(int(s0) - 1)
    r = ldexp_f32_bits(tirx.reinterpret("int32", x), e) ^ (m & _i32(_INT32_MIN))   # flip the sign bit
    return tirx.Select(c != _i32(0), tirx.reinterpret("float32", r), tirx.const(0.0, "float32"))


def _finish(args) -> tvm.tirx.PrimFunc:
    return te.create_prim_func(args, index_dtype_override="int64").without_attr("global_symbol")


# ----------------------------------------------------------------------------------- dense
def _dense(spec: DenseSpec, float_mode: bool, exact_scale: Optional[bool] = None) -> tvm.tirx.PrimFunc:
    M, K, N, NP, NB = spec.batch, spec.in_features, spec.out_features, spec.n_padded, spec.n_block
    X = te.placeholder((M, K), "float32" if float_mode else "int32", name="X_q")
    Wb = te.placeholder(spec.weight_shape, "int8", name="codes")
    W = lambda kk, j: Wb[j // NB, kk, j % NB]  # noqa: E731  (k, j) view of the column blocks
    B = te.placeholder((N,), "float32", name="bias") if spec.has_bias else None
    k = te.reduce_axis((0, K), name="k")
    if float_mode:
        acc = te.compute((M, NP), lambda i, j: te.sum(_term_float(X[i, k], W(k, j), spec.s0), axis=k), name="acc")
        out = te.compute((M, N), lambda i, j: acc[i, j] + B[j] if B is not None else acc[i, j], name="out")
    else:
        exact = needs_exact_scale(spec) if exact_scale is None else bool(exact_scale)
        acc = te.compute((M, NP), lambda i, j: te.sum(_term_int(X[i, k], W(k, j), spec.acc_dtype), axis=k),
                         name="acc")
        out = te.compute((M, N), lambda i, j: _epilogue(acc[i, j], B[j] if B is not None else None, spec, exact),
                         name="out")
    return _finish([X, Wb] + ([B] if B is not None else []) + [out])


def shift_dense(spec: DenseSpec, exact_scale: Optional[bool] = None) -> tvm.tirx.PrimFunc:
    """Unscheduled fixed-point shift-dense PrimFunc ``(X_q int32 (M,K), codes int8 (NBLK,K,NB), [bias f32 (N,)],
    out f32 (M,N))``. ``exact_scale`` forces (True) / forbids (False) the integer-ldexp epilogue; default
    :func:`needs_exact_scale`. No ``global_symbol``; int64 indices."""
    return _dense(spec, False, exact_scale)


def shift_dense_float(spec: DenseSpec) -> tvm.tirx.PrimFunc:
    """Unscheduled float-activation shift-dense PrimFunc ``(X f32 (M,K), codes int8 (NBLK,K,NB), [bias], out f32)``:
    ``out = Σ_k ±ldexp(x, s0 + |code| - 1) (+ bias)`` accumulated in float32 in k order."""
    return _dense(spec, True)


# ----------------------------------------------------------------------------------- conv2d
def _conv(spec: Conv2dSpec, float_mode: bool, exact_scale: Optional[bool] = None) -> tvm.tirx.PrimFunc:
    N, C, H, Wd = spec.x_shape
    G, KH, KW, Cg, OgP = spec.weight_shape
    Og, O = spec.group_out, spec.out_channels
    OH, OW = spec.out_hw
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    pt, pl, pb, pr = spec.padding
    dt = "float32" if float_mode else "int32"
    X = te.placeholder((N, C, H, Wd), dt, name="X_q")
    Wt = te.placeholder((G, KH, KW, Cg, OgP), "int8", name="codes")
    B = te.placeholder((O,), "float32", name="bias") if spec.has_bias else None
    # only the rows/columns some output reads
    HP = max(pt + H + pb, (OH - 1) * sh + (KH - 1) * dh + 1)
    WP = max(pl + Wd + pr, (OW - 1) * sw + (KW - 1) * dw + 1)
    zero = tirx.const(0, dt)

    def pad_fn(n, c, h, w):
        cond = []
        if pt:
            cond.append(h >= pt)
        if pb or HP > pt + H:
            cond.append(h < pt + H)
        if pl:
            cond.append(w >= pl)
        if pr or WP > pl + Wd:
            cond.append(w < pl + Wd)
        val = X[n, c, h - pt, w - pl]
        if not cond:
            return val
        return tirx.if_then_else(tirx.all(*cond), val, zero)

    Xp = te.compute((N, C, HP, WP), pad_fn, name="pad")
    # fixed point: 0 - x_pad once per input element (the term selects between x and -x before the shift)
    # (in acc_dtype: with an int64 accumulator x_q may be INT32_MIN, whose negation needs 64 bits)
    acc_zero = tirx.const(0, spec.acc_dtype)
    Xn = None if float_mode else te.compute(
        (N, C, HP, WP), lambda n, c, h, w: acc_zero - pad_fn(n, c, h, w).astype(spec.acc_dtype), name="negpad")
    ry = te.reduce_axis((0, KH), name="ry")
    rx = te.reduce_axis((0, KW), name="rx")
    rc = te.reduce_axis((0, Cg), name="rc")

    def acc_fn(n, g, og, oh, ow):
        idx = (n, g * Cg + rc, oh * sh + ry * dh, ow * sw + rx * dw)
        code = Wt[g, ry, rx, rc, og]
        t = _term_float(Xp[idx], code, spec.s0) if float_mode else _term_int(Xp[idx], code, spec.acc_dtype, Xn[idx])
        return te.sum(t, axis=[ry, rx, rc])

    acc = te.compute((N, G, OgP, OH, OW), acc_fn, name="acc")

    def out_fn(n, o, oh, ow):
        a = acc[n, o // Og, o % Og, oh, ow]
        bv = B[o] if B is not None else None
        if float_mode:
            return a + bv if bv is not None else a
        exact = needs_exact_scale(spec) if exact_scale is None else bool(exact_scale)
        return _epilogue(a, bv, spec, exact)

    out = te.compute((N, O, OH, OW), out_fn, name="out")
    return _finish([X, Wt] + ([B] if B is not None else []) + [out])


def shift_conv2d(spec: Conv2dSpec, exact_scale: Optional[bool] = None) -> tvm.tirx.PrimFunc:
    """Unscheduled fixed-point shift-conv2d PrimFunc ``(X_q int32 (N,C,H,W), codes int8 (G,KH,KW,Cg,Og_pad),
    [bias f32 (O,)], out f32 (N,O,OH,OW))``; see the module docstring."""
    return _conv(spec, False, exact_scale)


def shift_conv2d_float(spec: Conv2dSpec) -> tvm.tirx.PrimFunc:
    """Unscheduled float-activation shift-conv2d PrimFunc (X float32 NCHW; float32 accumulation)."""
    return _conv(spec, True)
