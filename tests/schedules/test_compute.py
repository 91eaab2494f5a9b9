"""Shift kernels (schedules/) against the exact reference (shiftcomp.reference), bit for bit.

Compiling dominates (~0.3 s a kernel), so hypothesis draws a *kernel case* (shape x numeric config) from a
fixed list -- each compiles once (cached) -- and a seed from which numpy draws activations, weights and
bias. The numeric configs cover weight bits 2..8 (their shift ranges), positive shifts, fraction bits up
to a subnormal output scale, int32 accumulators filled to their bound and ranges that force int64, bias /
no bias; the shapes cover strides, asymmetric padding, dilation, groups (depthwise, narrow, padded channel
groups), tails of every vector loop and tiny shapes.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import platform
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis_support import examples

tvm = pytest.importorskip("tvm")
from tvm import s_tir, te, tirx  # noqa: E402

from schedules import KINDS, build_shift_kernel, compute, x86  # noqa: E402
from schedules.compute import (Conv2dSpec, DenseSpec, conv2d_weight_codes, dense_weight_codes,  # noqa: E402
                               ldexp_f32_bits, needs_exact_scale)
from schedules.target import resolve_target, target_key  # noqa: E402
from shiftcomp import reference  # noqa: E402

LLVM = resolve_target("llvm")
DEV = tvm.cpu()
SETTINGS = dict(deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------------ numeric configs
@dataclasses.dataclass(frozen=True)
class Num:
    """How one kernel's numbers are drawn.

    shifts are drawn in ``[s0, s0 + span]`` (span capped so the accumulator bound fits ``acc``), the
    activations in ``[-2**(xbits-1), 2**(xbits-1) - 1]``; ``force_int64``: the span is chosen so that the
    bound exceeds 2**31 (the int64 path is really needed).
    """

    name: str
    weight_bits: int
    s0: int
    frac: int
    acc: str
    xbits: int
    bias: bool
    hi: int = 0                      # largest shift of the format
    force_int64: bool = False


NUMS = {n.name: n for n in [
    Num("b2", 2, -1, 0, "int32", 4, False),                     # [-1, 0]
    Num("b3", 3, -3, 3, "int32", 8, True),                      # [-3, 0]
    Num("b5", 5, -15, 5, "int32", 8, True),                     # Q default [-15, 0], 8-bit acts
    Num("b5_16bit", 5, -15, 8, "int32", 16, False),             # int32 filled close to its bound
    Num("b6_int64", 6, -31, 8, "int64", 16, True, force_int64=True),
    Num("b8_int64_sub", 8, -126, 16, "int64", 16, True, force_int64=True),  # PS b=8, scale 2**-142
    Num("b7_tiny", 7, -63, 86, "int32", 8, True),               # scale 2**-149, subnormal outputs
    Num("pos", 4, 3, 0, "int32", 8, True, hi=10),               # positive shifts (user range)
    Num("exact_scale", 4, 66, 0, "int64", 8, True, hi=80),      # e = 66 > 64: integer-ldexp epilogue
]}


def _span(num: Num, red: int) -> int:
    """Largest shift span with ``red * 2**span * 2**(xbits-1) < 2**(bits-1)``."""
    bits = 32 if num.acc == "int32" else 64
    room = (bits - 1) - (num.xbits - 1) - math.ceil(math.log2(red + 1)) - 1
    return max(0, min(room, num.hi - num.s0))


def draw_weights(rng: np.random.Generator, shape, num: Num, red: int):
    span = _span(num, red)
    shift = rng.integers(num.s0, num.s0 + span + 1, shape)
    sign = rng.integers(-1, 2, shape)
    mode = rng.random()
    if mode < 0.15:                                   # all at the largest shift, one sign: acc near its bound
        shift[...] = num.s0 + span
        sign[...] = rng.choice([-1, 1])
    elif mode < 0.2:
        sign[...] = 0                                 # an all-zero layer
    if rng.random() < 0.8 and sign.size:              # usually the smallest shift is used (s0 == reference's)
        sign.flat[0] = rng.choice([-1, 1])
        shift.flat[0] = num.s0
    return shift.astype(np.int8), sign.astype(np.int8)


def draw_x(rng: np.random.Generator, shape, num: Num) -> np.ndarray:
    lo, hi = -(2 ** (num.xbits - 1)), 2 ** (num.xbits - 1) - 1
    mode = rng.random()
    if mode < 0.15:
        return np.full(shape, rng.choice([lo, hi]), np.int32)
    if mode < 0.2:
        return np.zeros(shape, np.int32)
    x = rng.integers(lo, hi + 1, shape).astype(np.int32)
    if rng.random() < 0.3:
        x[rng.random(shape) < 0.3] = rng.choice([lo, hi])
    return x


def draw_bias(rng: np.random.Generator, n: int, num: Num, scale_exp: int) -> np.ndarray | None:
    if not num.bias:
        return None
    b = (rng.standard_normal(n) * 2.0 ** (scale_exp + int(rng.integers(-4, 12)))).astype(np.float32)
    b[rng.random(n) < 0.2] = 0.0
    b[rng.random(n) < 0.1] = -0.0
    return b


# ------------------------------------------------------------------------------------------ compile + run
@functools.lru_cache(maxsize=None)
def compiled(kind: str, spec, target_str: str = "llvm"):
    prim = build_shift_kernel(kind, spec, target_str)
    return tvm.compile(prim.with_attr("global_symbol", "main"), LLVM)


def run(ex, args, out_shape) -> torch.Tensor:
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32), DEV)
    ex["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a), DEV) for a in args], out)
    return torch.from_numpy(out.numpy())


# ------------------------------------------------------------------------------------------ dense
DENSE_SHAPES = [  # (M, K, N)
    (1, 1, 1), (1, 7, 3), (3, 37, 21), (4, 64, 70), (5, 16, 130), (2, 300, 64), (8, 9, 8),
]
DENSE_CASES = [(shape, name) for shape, names in zip(DENSE_SHAPES, [
    ("b2", "b5", "exact_scale"),
    ("b3", "b6_int64", "pos"),
    ("b5", "b8_int64_sub", "b7_tiny", "b2"),
    ("b5_16bit", "b6_int64", "b3"),
    ("b5", "pos", "b8_int64_sub"),
    ("b5_16bit", "b6_int64", "exact_scale"),
    ("b2", "b5", "b7_tiny"),
]) for name in names]


def dense_spec(shape, num: Num) -> DenseSpec:
    m, k, n = shape
    return DenseSpec(m, k, n, num.frac, num.s0, num.acc, num.bias)


@pytest.mark.bitexact
@settings(max_examples=examples(450), **SETTINGS)
@given(case=st.sampled_from(DENSE_CASES), seed=st.integers(0, 2 ** 32 - 1))
def test_dense_bitexact(case, seed):
    shape, name = case
    num = NUMS[name]
    m, k, n = shape
    rng = np.random.default_rng(seed)
    shift, sign = draw_weights(rng, (n, k), num, k)
    x = draw_x(rng, (m, k), num)
    bias = draw_bias(rng, n, num, num.s0 - num.frac + num.xbits)
    spec = dense_spec(shape, num)
    ref = reference.shift_linear(torch.from_numpy(x), torch.from_numpy(shift), torch.from_numpy(sign), num.frac,
                                 None if bias is None else torch.from_numpy(bias))
    if num.acc == "int32":
        assert int(ref.acc.abs().max()) < 2 ** 31
    args = [x, dense_weight_codes(shift, sign, num.s0)] + ([bias] if bias is not None else [])
    got = run(compiled("dense", spec), args, spec.out_shape)
    assert torch.equal(got, ref.out), (shape, name, seed)


# ------------------------------------------------------------------------------------------ conv2d
CONV_SHAPES = [  # N, C, H, W, O, KH, KW, stride, padding (t, l, b, r), dilation, groups
    (1, 3, 8, 8, 16, 3, 3, 1, (1, 1, 1, 1), 1, 1),            # plain 3x3 "same"
    (2, 4, 7, 9, 10, 3, 2, (2, 1), (0, 1, 2, 0), (1, 2), 1),  # stride, asymmetric pad, dilation, Og 10 -> 16
    (1, 8, 6, 6, 8, 3, 3, 1, (1, 1, 1, 1), 1, 8),             # depthwise
    (1, 6, 5, 7, 12, 1, 3, (1, 2), 0, 1, 3),                  # narrow groups (Og 4): spatial vectors
    (1, 4, 5, 5, 20, 3, 3, 1, (1, 1, 1, 1), 1, 2),            # Og 10 padded to 16 with 2 groups
    (1, 2, 6, 37, 2, 3, 3, 1, (1, 1, 1, 1), 1, 2),            # depthwise, OW 37 (one 37-lane vector)
    (1, 2, 3, 67, 2, 1, 1, 1, 0, 1, 2),                       # depthwise, prime OW 67 (predicated tail)
    (1, 16, 9, 9, 48, 3, 3, 2, 1, 2, 2),                      # grouped Og 24, stride 2, dilation 2
    (1, 4, 4, 4, 24, 2, 2, 1, 0, 1, 1),                       # 3x3 output pixels
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1),                        # tiny
    (1, 5, 3, 3, 7, 3, 3, 1, (2, 0, 0, 2), 1, 1),             # big one-sided padding, Og 7
    (2, 6, 8, 5, 12, 3, 3, 1, 1, 1, 1),                       # OW 5
]
CONV_CASES = [(i, name) for i, names in enumerate([
    ("b5", "b6_int64", "b2"),
    ("b3", "b8_int64_sub", "b5"),
    ("b5", "b6_int64", "b7_tiny"),
    ("b5_16bit", "pos"),
    ("b5", "b6_int64"),
    ("b3", "b5_16bit"),
    ("b5",),
    ("b5", "b8_int64_sub"),
    ("b2", "exact_scale"),
    ("b5", "b6_int64"),
    ("b3", "b5"),
    ("b5_16bit", "b7_tiny"),
]) for name in names]


def conv_spec(i: int, num: Num) -> Conv2dSpec:
    n, c, h, w, o, kh, kw, st_, pad, dil, g = CONV_SHAPES[i]
    return Conv2dSpec(n, c, h, w, o, kh, kw, st_, pad, dil, g, num.frac, num.s0, num.acc, num.bias)


@pytest.mark.bitexact
@settings(max_examples=examples(450), **SETTINGS)
@given(case=st.sampled_from(CONV_CASES), seed=st.integers(0, 2 ** 32 - 1))
def test_conv2d_bitexact(case, seed):
    i, name = case
    num = NUMS[name]
    spec = conv_spec(i, num)
    rng = np.random.default_rng(seed)
    wshape = (spec.out_channels, spec.group_in, spec.kernel_h, spec.kernel_w)
    shift, sign = draw_weights(rng, wshape, num, spec.group_in * spec.kernel_h * spec.kernel_w)
    x = draw_x(rng, spec.x_shape, num)
    bias = draw_bias(rng, spec.out_channels, num, num.s0 - num.frac + num.xbits)
    ref = reference.shift_conv2d(torch.from_numpy(x), torch.from_numpy(shift), torch.from_numpy(sign), num.frac,
                                 None if bias is None else torch.from_numpy(bias), spec.stride, spec.padding,
                                 spec.dilation, spec.groups)
    if num.acc == "int32":
        assert int(ref.acc.abs().max()) < 2 ** 31
    args = [x, conv2d_weight_codes(shift, sign, num.s0, spec.groups)] + ([bias] if bias is not None else [])
    got = run(compiled("conv2d", spec), args, spec.out_shape)
    assert torch.equal(got, ref.out), (CONV_SHAPES[i], name, seed)


def test_int64_configs_need_int64():
    """The int64 configs really exceed int32 (else the 'int64-forcing' coverage would be fake)."""
    num = NUMS["b6_int64"]
    k = 37
    assert 2 ** _span(num, k) * k * 2 ** (num.xbits - 1) >= 2 ** 31
    assert needs_exact_scale(dense_spec((1, 7, 3), NUMS["exact_scale"]))


# ------------------------------------------------------------------------------------------ float activations
FLOAT_CASES = [  # (kind, dense shape | conv shape index, s0, bias): float kernels compile in ~2 s each
    ("dense", (3, 37, 21), -15, True), ("dense", (2, 64, 70), 0, False), ("conv2d", 1, -6, True),
    ("conv2d", 2, -15, False), ("conv2d", 4, 0, True), ("conv2d", 0, -6, False)]


def _float_x(rng: np.random.Generator, shape) -> np.ndarray:
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(-20, 20, shape)
    x[rng.random(shape) < 0.05] = 0.0
    tiny = rng.random(shape) < 0.05                        # subnormal inputs and subnormal terms
    x[tiny] = rng.standard_normal(int(tiny.sum())) * 2.0 ** -135
    return x.astype(np.float32)


@settings(max_examples=examples(60), **SETTINGS)
@given(case=st.sampled_from(FLOAT_CASES), seed=st.integers(0, 2 ** 32 - 1))
def test_float_activation_kernels(case, seed):
    """float-activation kernels vs the float64 reference, within the float32 summation bound (docs/numerics.md, Shift layer)."""
    kind, shp, s0, bias = case
    rng = np.random.default_rng(seed)
    num = Num("f", 5, s0, 0, "int32", 8, bias, hi=s0 + 12)
    if kind == "dense":
        m, k, n = shp
        spec = DenseSpec(m, k, n, 0, s0, "int32", bias)
        wshape, red, xshape = (n, k), k, (m, k)
    else:
        spec = dataclasses.replace(conv_spec(shp, num), has_bias=bias)
        wshape = (spec.out_channels, spec.group_in, spec.kernel_h, spec.kernel_w)
        red, xshape = spec.group_in * spec.kernel_h * spec.kernel_w, spec.x_shape
    shift, sign = draw_weights(rng, wshape, num, red)
    x = _float_x(rng, xshape)
    b = rng.standard_normal(spec.out_shape[1]).astype(np.float32) if bias else None
    xt, sh, sg = torch.from_numpy(x), torch.from_numpy(shift), torch.from_numpy(sign)
    bt = None if b is None else torch.from_numpy(b)
    wabs = torch.from_numpy(np.abs(sign) * 2.0 ** shift.astype(np.float64))
    if kind == "dense":
        codes = dense_weight_codes(shift, sign, s0)
        ref = reference.shift_linear_float(xt, sh, sg, bt).double()
        mag = torch.nn.functional.linear(xt.double().abs(), wabs)
    else:
        codes = conv2d_weight_codes(shift, sign, s0, spec.groups)
        ref = reference.shift_conv2d_float(xt, sh, sg, bt, spec.stride, spec.padding, spec.dilation,
                                           spec.groups).double()
        xp = torch.nn.functional.pad(xt.double().abs(), (spec.padding[1], spec.padding[3], spec.padding[0],
                                                         spec.padding[2]))
        mag = torch.nn.functional.conv2d(xp, wabs, None, spec.stride, 0, spec.dilation, spec.groups)
    got = run(compiled(kind + "_float", spec), [x, codes] + ([b] if bias else []), spec.out_shape).double()
    bshape = [1] * got.dim()
    bshape[1] = -1
    babs = torch.from_numpy(np.abs(b)).double().view(bshape) if bias else 0.0
    # float32 recursive summation: |err| <= (red+1) u sum|terms| (+ u |bias| + the reference's own rounding)
    u = 2.0 ** -24
    tol = (red + 2) * u * (mag + babs) + 2.0 ** -149 * (red + 2) + u * ref.abs()
    assert bool(((got - ref).abs() <= tol).all()), (case, seed)


# ------------------------------------------------------------------------------------------ ldexp, epilogue
@functools.lru_cache(maxsize=None)
def _ldexp_kernel(n: int):
    X = te.placeholder((n,), "float32", name="X")
    E = te.placeholder((n,), "int32", name="E")
    Y = te.compute((n,), lambda i: tirx.reinterpret("float32", ldexp_f32_bits(tirx.reinterpret("int32", X[i]), E[i])),
                   name="Y")
    return tvm.compile(te.create_prim_func([X, E, Y]).with_attr("global_symbol", "main"), LLVM)


def test_ldexp_equals_torch_ldexp():
    """The exponent-add term equals torch.ldexp bit for bit (zero, subnormal in/out, overflow, inf; NaN stays NaN)."""
    rng = np.random.default_rng(0)
    n = 1 << 15
    x = rng.integers(-2 ** 31, 2 ** 31, n, dtype=np.int64).astype(np.int32).view(np.float32).copy()
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.1754942e-38, 1.17549435e-38,
                         3.4028235e38, -3.4028235e38, 1.0, -1.5, 2.5e-40, 4.2e-45, 0.75], np.float32)
    x[: specials.size * 64] = np.repeat(specials, 64)
    e = rng.integers(-149, 128, n).astype(np.int32)
    e[: specials.size * 64] = np.tile(np.array([-149, -140, -127, -126, -24, -1, 0, 1, 2, 24, 126, 127, -150 + 1,
                                                 -25, 25, 100] * 4, np.int32), specials.size)
    out = tvm.runtime.tensor(np.zeros(n, np.float32), DEV)
    _ldexp_kernel(n)["main"](tvm.runtime.tensor(x, DEV), tvm.runtime.tensor(e, DEV), out)
    got = torch.from_numpy(out.numpy())
    ref = torch.ldexp(torch.from_numpy(x), torch.from_numpy(e))
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(got), nan)
    assert torch.equal(got[~nan].view(torch.int32), ref[~nan].view(torch.int32))


def test_exact_scale_epilogue_avoids_fma():
    """acc = 2**62 * ... scaled by 2**66 overflows to inf before the bias add (reference); an FMA would not."""
    spec = DenseSpec(1, 1, 8, 0, 66, "int64", True)
    assert needs_exact_scale(spec)
    x = np.array([[2 ** 30]], np.int32)
    shift = np.full((8, 1), 66 + 32, np.int8)
    sign = np.ones((8, 1), np.int8)
    b = np.full(8, -3.4028235e38, np.float32)
    ref = reference.shift_linear(torch.from_numpy(x), torch.from_numpy(shift), torch.from_numpy(sign), 0,
                                 torch.from_numpy(b))
    got = run(compiled("dense", spec), [x, dense_weight_codes(shift, sign, 66), b], spec.out_shape)
    assert torch.equal(got, ref.out) and bool(torch.isinf(ref.out).all())
    fused = tvm.compile(x86.schedule_dense(compute.shift_dense(spec, exact_scale=False), spec, LLVM)
                        .with_attr("global_symbol", "main"), LLVM)
    assert not torch.equal(run(fused, [x, dense_weight_codes(shift, sign, 66), b], spec.out_shape), ref.out)


# ------------------------------------------------------------------------------------------ layouts
def test_weight_code_layouts():
    rng = np.random.default_rng(1)
    shift = rng.integers(-7, 1, (70, 5)).astype(np.int8)
    sign = rng.integers(-1, 2, (70, 5)).astype(np.int8)
    codes = compute.weight_codes(shift, sign, -7)
    assert np.array_equal(np.sign(codes), sign)
    assert np.array_equal(np.where(sign != 0, np.abs(codes) - 1, 0), np.where(sign != 0, shift + 7, 0))
    d = dense_weight_codes(shift, sign, -7)
    spec = DenseSpec(1, 5, 70)
    assert d.shape == spec.weight_shape == (2, 5, 64)
    j = np.arange(70)
    assert np.array_equal(d[j // 64, :, j % 64], codes)              # column j -> block j // NB, lane j % NB
    assert not d.reshape(-1, 5, 64)[1, :, 6:].any()                 # padded columns are zero codes
    w = rng.integers(-3, 1, (20, 3, 2, 3)).astype(np.int8)
    sg = rng.integers(-1, 2, (20, 3, 2, 3)).astype(np.int8)
    c = conv2d_weight_codes(w, sg, -3, groups=2)                    # Og 10 -> 16
    assert c.shape == Conv2dSpec(1, 6, 4, 4, 20, 2, 3, groups=2).weight_shape == (2, 2, 3, 3, 16)
    full = compute.weight_codes(w, sg, -3)
    for o in range(20):
        g, og = divmod(o, 10)
        assert np.array_equal(c[g, :, :, :, og], full[o].transpose(1, 2, 0))
    assert not c[..., 10:].any()
    with pytest.raises(ValueError):
        compute.weight_codes(np.array([5]), np.array([1]), -123)        # shift - s0 + 1 = 129 > 127
    with pytest.raises(ValueError):
        compute.weight_codes(np.array([-3]), np.array([1]), -2)         # shift below s0


def test_target_helpers():
    t = resolve_target("llvm")
    assert t.kind.name == "llvm" and str(t.attrs["mcpu"]) not in ("", "native", "generic")
    assert int(t.attrs["num-cores"]) >= 1
    c = resolve_target("cuda")
    assert c.kind.name == "cuda" and str(c.attrs["arch"]).startswith("sm_") and c.host is not None
    assert target_key({"kind": "cuda", "arch": "sm_90"}) == "cuda-sm_90"
    assert target_key("llvm") == "llvm-" + str(t.attrs["mcpu"])
    assert resolve_target(t) is t


# ------------------------------------------------------------------------------------------ multiply audit (TIR)
_LOAD = tvm.ir.expr.TensorLoad          # what a TIR BufferLoad is in TVM 0.27
_EXPR_CHILDREN = ("a", "b", "value", "condition", "true_value", "false_value", "body", "args", "base",
                  "vectors")


def _expr_muls(e, out: list) -> None:
    """Mul nodes of a stored value, not descending into load indices (address math)."""
    if e is None or isinstance(e, (int, float, str)):
        return
    if isinstance(e, _LOAD):
        return
    if isinstance(e, tirx.Mul):
        out.append(e)
    for attr in _EXPR_CHILDREN:
        v = getattr(e, attr, None)
        if v is None or isinstance(v, (int, float, str)):
            continue
        if hasattr(v, "__len__") and not hasattr(v, "ty"):
            for x in v:
                _expr_muls(x, out)
        else:
            _expr_muls(v, out)


def data_path_muls(prim) -> dict:
    """Mul nodes in the values stored by each block of ``prim``, by block name.

    How index math is told apart from data: with ``index_dtype_override="int64"`` all index arithmetic is
    int64 -- but an int64 accumulator is int64 too, so the dtype alone cannot decide. Structure does: index
    math lives in buffer-access indices, loop bounds, block bindings and predicates; the data path is the
    value of a BufferStore *outside* the indices of the loads it reads. This walks exactly that.
    """
    found: dict = {}

    def stmt(s, block: str) -> None:
        if s is None:
            return
        if isinstance(s, tirx.SeqStmt):
            for c in s.seq:
                stmt(c, block)
        elif isinstance(s, s_tir.SBlockRealize):
            stmt(s.block, block)
        elif isinstance(s, s_tir.SBlock):
            found.setdefault(s.name_hint, [])
            stmt(s.init, s.name_hint)
            stmt(s.body, s.name_hint)
        elif isinstance(s, tirx.BufferStore):
            _expr_muls(s.value, found.setdefault(block, []))
        elif isinstance(s, tirx.IfThenElse):
            stmt(s.then_case, block)
            stmt(s.else_case, block)
        else:
            stmt(getattr(s, "body", None), block)

    stmt(prim.body, "root")
    return found


AUDIT_SPECS = [
    ("dense", DenseSpec(3, 37, 21, 5, -6, "int32", True)),
    ("dense", DenseSpec(3, 37, 21, 5, -6, "int64", False)),
    ("conv2d", conv_spec(4, NUMS["b6_int64"])),
    ("conv2d", conv_spec(2, NUMS["b5"])),
    ("dense_float", DenseSpec(2, 9, 8, 0, -6, "int32", True)),
    ("conv2d_float", conv_spec(1, NUMS["b3"])),
]


@pytest.mark.parametrize("kind,spec", AUDIT_SPECS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(AUDIT_SPECS)])
@pytest.mark.parametrize("target", ["none", "llvm", "cuda"])
def test_no_multiply_in_data_path(kind, spec, target):
    prim = KINDS[kind][0](spec) if target == "none" else build_shift_kernel(kind, spec, target)
    found = data_path_muls(prim)
    assert found, "no blocks found"
    for block, muls in found.items():
        if block == "out":                              # the one per-output scale float32(acc) * 2**(s0-F)
            assert all(str(m.ty) == "float32" and isinstance(m.b, tirx.FloatImm) for m in muls), muls
            assert len(muls) <= 1
        else:
            assert not muls, (block, muls)
    assert "* -1" not in prim.script()            # no unary minus (TIR prints it as `v * -1`)


def test_audit_catches_a_multiply():
    """Negative control for data_path_muls: a term written as ``sign * x`` is reported, index math is not."""
    X = te.placeholder((4, 8), "int32", name="X")
    G = te.placeholder((8, 3), "int8", name="G")
    k = te.reduce_axis((0, 8), name="k")
    Y = te.compute((4, 3), lambda i, j: te.sum(X[i, k] * G[k, j].astype("int32"), axis=k), name="acc")
    Z = te.compute((8,), lambda i: X[i // 2, (i * 3) % 8], name="out")   # index multiply only
    found = data_path_muls(te.create_prim_func([X, G, Y, Z], index_dtype_override="int64"))
    assert len(found["acc"]) == 1 and found["out"] == []


def test_build_shift_kernel_api():
    spec = DenseSpec(2, 3, 4)
    prim = build_shift_kernel("dense", spec, "llvm")
    assert prim is build_shift_kernel("dense", spec, "llvm")          # in-process cache
    assert "global_symbol" not in (prim.attrs or {})
    assert [str(p.ty.dtype) for p in prim.params] == ["int32", "int8", "float32"]
    assert [int(d) for d in prim.params[1].ty.shape] == list(spec.weight_shape)
    with pytest.raises(ValueError):
        build_shift_kernel("matmul", spec, "llvm")
    with pytest.raises(ValueError):
        build_shift_kernel("conv2d", spec, "llvm")


@pytest.mark.parametrize("target", ["llvm", "cuda"])
def test_schedule_traces_replay_from_json(target):
    """The manual schedules are plain traces (MetaSchedule can store them as tuning records)."""
    from schedules import cuda as cuda_sched

    mod = x86 if target == "llvm" else cuda_sched
    tgt = resolve_target(target)
    for kind, spec in [("dense", dense_spec((5, 16, 130), NUMS["b5"])), ("conv2d", conv_spec(4, NUMS["b5"])),
                       ("conv2d", conv_spec(2, NUMS["b6_int64"])), ("conv2d", conv_spec(0, NUMS["b3"]))]:
        prim = KINDS[kind][0](spec)
        sch = getattr(mod, kind + "_schedule")(prim, spec, tgt)
        fresh = s_tir.Schedule(prim)
        s_tir.Trace.apply_json_to_schedule(sch.trace.as_json(), fresh)
        tvm.ir.assert_structural_equal(fresh.mod, sch.mod)


# ------------------------------------------------------------------------------------------ write coverage
_OPS = {tirx.Add: lambda a, b: a + b, tirx.Sub: lambda a, b: a - b, tirx.Mul: lambda a, b: a * b,
        tirx.FloorDiv: lambda a, b: a // b, tirx.FloorMod: lambda a, b: a % b, tirx.Min: min, tirx.Max: max,
        tirx.LT: lambda a, b: a < b, tirx.LE: lambda a, b: a <= b, tirx.GT: lambda a, b: a > b,
        tirx.GE: lambda a, b: a >= b, tirx.EQ: lambda a, b: a == b, tirx.NE: lambda a, b: a != b,
        tirx.And: lambda a, b: a and b, tirx.Or: lambda a, b: a or b}


def _ival(e, env):
    if isinstance(e, (int, bool)):
        return e
    if isinstance(e, tirx.IntImm):
        return int(e.value)
    if isinstance(e, tirx.Var):
        return env[e]
    if isinstance(e, tirx.Cast):
        return _ival(e.value, env)
    if isinstance(e, tirx.Not):
        return not _ival(e.a, env)
    return _OPS[type(e)](_ival(e.a, env), _ival(e.b, env))


def block_writes(prim, names=("out", "acc_local")) -> dict:
    """How often each block in ``names`` runs at each iteration point (interpreting the loop nest)."""
    counts: dict = {}

    def contains(s) -> bool:
        found = []

        def go(t):
            if t is None or found:
                return
            if isinstance(t, tirx.SeqStmt):
                for c in t.seq:
                    go(c)
            elif isinstance(t, s_tir.SBlockRealize):
                if t.block.name_hint in names:
                    found.append(1)
                else:
                    go(t.block.body)
            else:
                go(getattr(t, "body", None))
        go(s)
        return bool(found)

    def run_stmt(s, env) -> None:
        if s is None or not contains(s):
            return
        if isinstance(s, tirx.SeqStmt):
            for c in s.seq:
                run_stmt(c, env)
        elif isinstance(s, tirx.For):
            lo, ext = _ival(s.min, env), _ival(s.extent, env)
            for v in range(lo, lo + ext):
                run_stmt(s.body, {**env, s.loop_var: v})
        elif isinstance(s, s_tir.SBlockRealize):
            if s.block.name_hint in names:
                if _ival(s.predicate, env):
                    key = (s.block.name_hint,) + tuple(_ival(v, env) for v in s.iter_values)
                    counts[key] = counts.get(key, 0) + 1
            else:
                run_stmt(s.block.body, env)
        else:
            run_stmt(getattr(s, "body", None), env)

    run_stmt(prim.body, {})
    return counts


@pytest.mark.parametrize("target", ["llvm", "cuda"])
def test_each_output_written_once(target):
    """Every output element (and every write-back of a padded accumulator) is stored exactly once.

    Bit-exact runs alone cannot see a schedule whose epilogue tile also writes a *neighbouring* tile's
    outputs from registers that tile never computed (e.g. ``reverse_compute_at`` of ``o -> (o//Og, o%Og)``
    over padded channel groups): executed in order, the right tile overwrites the garbage later.
    """
    specs = [("conv2d", conv_spec(i, NUMS["b5"])) for i in range(len(CONV_SHAPES))]
    specs += [("dense", dense_spec(shape, NUMS["b5"])) for shape in DENSE_SHAPES]
    for kind, spec in specs:
        counts = block_writes(build_shift_kernel(kind, spec, target))
        outs = {k: c for k, c in counts.items() if k[0] == "out"}
        assert len(outs) == math.prod(spec.out_shape), (kind, spec)
        assert set(counts.values()) == {1}, (kind, spec, [k for k, c in counts.items() if c != 1][:5])


# ------------------------------------------------------------------------------------------ x86 assembly
def _asm_blocks(asm: str, pattern: str) -> list:
    blocks, cur = [], []
    for line in asm.splitlines():
        if re.match(r"^\.?LBB\d+_\d+:", line) or re.match(r"^[A-Za-z_.$][\w.$]*:\s*$", line):
            blocks.append(cur)
            cur = []
        cur.append(line)
    blocks.append(cur)
    return ["\n".join(b) for b in blocks if any(re.search(pattern, ln) for ln in b)]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly check")
def test_x86_inner_loop_is_vpsllvd_without_multiply():
    if not tvm.target.codegen.llvm_cpu_has_features("avx2", LLVM):
        pytest.skip("host CPU has no AVX2 (no variable vector shifts)")
    spec = DenseSpec(4, 256, 128, 5, -15, "int32", True)
    asm = compiled("dense", spec).mod.inspect_source("asm")
    hot = _asm_blocks(asm, r"\bvpsllvd\b")
    assert hot, "no basic block with vpsllvd"
    for b in hot:
        assert not re.search(r"\b(imul\w*|vpmull\w*|vpmadd\w*|mulx)\b", b), b
    # the conv2d kernel too (channel vectors)
    cspec = conv_spec(0, NUMS["b5"])
    casm = compiled("conv2d", cspec).mod.inspect_source("asm")
    chot = _asm_blocks(casm, r"\bvpsllvd\b")
    assert chot and not any(re.search(r"\b(imul\w*|vpmull\w*|vpmadd\w*)\b", b) for b in chot)
    # int64 accumulators: 64-bit variable shifts (vpsllvq)
    qasm = compiled("dense", DenseSpec(4, 256, 128, 5, -15, "int64", True)).mod.inspect_source("asm")
    qhot = _asm_blocks(qasm, r"\bvpsllvq\b")
    assert qhot and not any(re.search(r"\b(imul\w*|vpmull\w*|vpmadd\w*)\b", b) for b in qhot)


def test_conv_int64_negates_int32_min_in_64_bits():
    """The conv term reads ``-x`` from the ``negpad`` stage; with an int64 accumulator ``x_q`` may be
    INT32_MIN, whose negation only fits in 64 bits (an int32 ``negpad`` gave the wrong sign)."""
    import tvm as _tvm
    spec = Conv2dSpec(1, 4, 3, 3, 8, 3, 3, padding=1, frac_bits=0, s0=0, acc_dtype="int64")
    rng = np.random.default_rng(1)
    shift = rng.integers(0, 3, size=(8, 4, 3, 3))
    sign = rng.choice([-1, 0, 1], size=shift.shape)
    x = rng.integers(-2 ** 31, 2 ** 31, size=spec.x_shape, dtype=np.int64)
    x[0, :, 1, 1] = -2 ** 31
    x = x.astype(np.int32)
    prim = build_shift_kernel("conv2d", spec, "llvm").with_attr("global_symbol", "main")
    ex = _tvm.compile(_tvm.IRModule({"main": prim}), target=resolve_target("llvm"))
    dev = _tvm.cpu()
    out = _tvm.runtime.tensor(np.zeros(spec.out_shape, np.float32), dev)
    ex["main"](_tvm.runtime.tensor(x, dev), _tvm.runtime.tensor(conv2d_weight_codes(shift, sign, 0), dev), out)
    xi = np.pad(x.astype(object), ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((8, 3, 3), dtype=object)
    for o, c, ry, rx in np.ndindex(8, 4, 3, 3):
        if sign[o, c, ry, rx]:
            acc[o] += int(sign[o, c, ry, rx]) * (xi[0, c, ry:ry + 3, rx:rx + 3] * (1 << int(shift[o, c, ry, rx])))
    exp = np.vectorize(lambda v: np.float32(float(v)), otypes=[np.float32])(acc)
    assert np.array_equal(out.numpy()[0], exp)
