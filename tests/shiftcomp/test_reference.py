"""The exact reference against brute-force Python-int loops, bit for bit."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis_support import examples

from shiftcomp import reference
from shiftcomp.reference import (acc_shift, accumulator_bound, int64_to_float32, shift_conv2d, shift_conv2d_float,
                                 shift_linear, shift_linear_float)

SETTINGS = settings(max_examples=examples(60), deadline=None)


# ------------------------------------------------------------------------------------------- brute force
def int_to_f32(n: int) -> np.float32:
    """Python int -> float32, one rounding to nearest even (exact integer arithmetic)."""
    a = abs(n)
    if a >= 2 ** 24:
        e = a.bit_length() - 24
        q, r = divmod(a, 1 << e)
        half = 1 << (e - 1)
        if r > half or (r == half and q & 1):
            q += 1
        a = q << e
    return np.float32(math.copysign(float(a), n))        # a has <= 24 significant bits: exact


def brute_finish(acc: list, s0: int, frac: int, bias: list | None, ch_of) -> list:
    """out = float32(acc) * float32(2**(s0-F)) [+ float32 bias], elementwise (numpy float32 ops: one rounding each)."""
    scale = np.float32(2.0 ** (s0 - frac))
    out = []
    for idx, a in acc:
        with np.errstate(over="ignore", under="ignore"):
            y = int_to_f32(a) * scale
            if bias is not None:
                y = np.float32(y + np.float32(bias[ch_of(idx)]))
        out.append((idx, y))
    return out


def brute_s0(shift, sign) -> int:
    used = [s for s, g in zip(shift, sign) if g != 0]
    return min(used) if used else 0


def brute_linear(x: list, shift: list, sign: list, frac: int, bias: list | None):
    """x: list of rows (M x K) of ints; shift/sign: N x K. Returns (acc rows, s0, out rows)."""
    flat_s = [v for r in shift for v in r]
    flat_g = [v for r in sign for v in r]
    s0 = brute_s0(flat_s, flat_g)
    acc = []
    for m, row in enumerate(x):
        for n in range(len(shift)):
            a = 0
            for k, xv in enumerate(row):
                if sign[n][k]:
                    a += sign[n][k] * (xv << (shift[n][k] - s0))
            acc.append(((m, n), a))
    return acc, s0, brute_finish(acc, s0, frac, bias, lambda idx: idx[1])


def brute_conv(x, shift, sign, frac, bias, stride, pad, dil, groups):
    """x: N x C x H x W nested lists of ints; shift/sign: O x Cg x KH x KW; pad = (top, left, bottom, right)."""
    n_, c_, h_, w_ = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    o_, cg, kh_, kw_ = len(shift), len(shift[0]), len(shift[0][0]), len(shift[0][0][0])
    flat_s = [shift[o][c][i][j] for o in range(o_) for c in range(cg) for i in range(kh_) for j in range(kw_)]
    flat_g = [sign[o][c][i][j] for o in range(o_) for c in range(cg) for i in range(kh_) for j in range(kw_)]
    s0 = brute_s0(flat_s, flat_g)
    oh = (h_ + pad[0] + pad[2] - dil[0] * (kh_ - 1) - 1) // stride[0] + 1
    ow = (w_ + pad[1] + pad[3] - dil[1] * (kw_ - 1) - 1) // stride[1] + 1
    og = o_ // groups
    acc = []
    for n in range(n_):
        for o in range(o_):
            gi = o // og
            for p in range(oh):
                for q in range(ow):
                    a = 0
                    for c in range(cg):
                        ci = gi * cg + c
                        for i in range(kh_):
                            for j in range(kw_):
                                hh = p * stride[0] + i * dil[0] - pad[0]
                                ww = q * stride[1] + j * dil[1] - pad[1]
                                if 0 <= hh < h_ and 0 <= ww < w_ and sign[o][c][i][j]:
                                    a += sign[o][c][i][j] * (x[n][ci][hh][ww] << (shift[o][c][i][j] - s0))
                    acc.append(((n, o, p, q), a))
    return acc, s0, brute_finish(acc, s0, frac, bias, lambda idx: idx[1])


def bits(t: torch.Tensor) -> list:
    return t.contiguous().view(torch.int32).flatten().tolist()


def assert_matches(res, acc, s0, out):
    assert res.s0 == s0
    assert res.acc.dtype == torch.int64 and res.out.dtype == torch.float32
    assert res.acc.flatten().tolist() == [a for _, a in acc]
    want = torch.from_numpy(np.array([y for _, y in out], dtype=np.float32))
    assert bits(res.out) == bits(want)                      # bit for bit (also distinguishes -0.0)


def draw_weights(g: torch.Generator, shape, lo: int, hi: int, p_zero: float = 0.25):
    shift = torch.randint(lo, hi + 1, shape, generator=g)
    sign = torch.randint(0, 2, shape, generator=g) * 2 - 1
    sign[torch.rand(shape, generator=g) < p_zero] = 0
    return shift.to(torch.int8), sign.to(torch.int8)


def draw_x(g: torch.Generator, shape, nbits: int):
    qmin, qmax = -(2 ** (nbits - 1)), 2 ** (nbits - 1) - 1
    x = torch.randint(qmin, qmax + 1, shape, generator=g)
    flat = x.view(-1)
    k = max(1, flat.numel() // 8)
    idx = torch.randint(0, flat.numel(), (k,), generator=g)
    flat[idx] = torch.where(torch.rand(k, generator=g) < 0.5, qmin, qmax)     # clamp edges
    return x


# ------------------------------------------------------------------------------------------- linear
@SETTINGS
@given(seed=st.integers(0, 2 ** 31), m=st.integers(1, 3), k=st.integers(1, 9), n=st.integers(1, 5),
       lo=st.integers(-20, 2), span=st.integers(0, 10), nbits=st.integers(2, 16), frac=st.integers(0, 16),
       has_bias=st.booleans())
def test_linear_equals_brute_force(seed, m, k, n, lo, span, nbits, frac, has_bias):
    g = torch.Generator().manual_seed(seed)
    shift, sign = draw_weights(g, (n, k), lo, lo + span)
    x = draw_x(g, (m, k), nbits)
    bias = torch.randn(n, generator=g) if has_bias else None
    res = shift_linear(x, shift, sign, frac, bias)
    assert_matches(res, *brute_linear(x.tolist(), shift.tolist(), sign.tolist(), frac,
                                      None if bias is None else bias.tolist()))


def test_linear_int64_path_equals_brute_force():
    """Wide shift ranges force acc >= 2**53: the exact int64 path (and the int64 -> float32 rounding)."""
    g = torch.Generator().manual_seed(1)
    for trial in range(6):
        shift, sign = draw_weights(g, (4, 16), -40, 2, p_zero=0.1)
        shift[:, 0] = 2
        sign[:, 0] = 1
        shift[0, 1] = -40
        sign[0, 1] = -1
        x = draw_x(g, (3, 16), 16)
        bound = accumulator_bound(shift, sign, int(x.abs().max()), acc_shift(shift, sign))
        assert 2 ** 53 <= bound < 2 ** 63
        bias = torch.randn(4, generator=g) if trial % 2 else None
        res = shift_linear(x, shift, sign, 7, bias)
        acc, s0, out = brute_linear(x.tolist(), shift.tolist(), sign.tolist(), 7,
                                    None if bias is None else bias.tolist())
        assert max(abs(a) for _, a in acc) >= 2 ** 53                 # the conversion case is exercised
        assert_matches(res, acc, s0, out)
        with pytest.raises(ValueError, match="not exact"):
            shift_linear(x, shift, sign, 7, bias, method="float64")


# ------------------------------------------------------------------------------------------- conv2d
conv_cases = st.fixed_dictionaries({
    "seed": st.integers(0, 2 ** 31),
    "n": st.integers(1, 2),
    "groups": st.integers(1, 3),
    "cg": st.integers(1, 2),
    "og": st.integers(1, 2),
    "kh": st.integers(1, 3), "kw": st.integers(1, 3),
    "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dil": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "pad": st.tuples(*[st.integers(0, 2)] * 4),
    "h": st.integers(1, 6), "w": st.integers(1, 6),
    "lo": st.integers(-16, 1), "span": st.integers(0, 8),
    "nbits": st.integers(2, 16), "frac": st.integers(0, 12),
    "bias": st.booleans(),
})


@SETTINGS
@given(conv_cases)
def test_conv2d_equals_brute_force(c):
    g = torch.Generator().manual_seed(c["seed"])
    groups = c["groups"]
    cin, cout = c["cg"] * groups, c["og"] * groups
    kh, kw, pad, dil, stride = c["kh"], c["kw"], c["pad"], c["dil"], c["stride"]
    h = max(c["h"], dil[0] * (kh - 1) + 1 - pad[0] - pad[2])       # non-empty output
    w = max(c["w"], dil[1] * (kw - 1) + 1 - pad[1] - pad[3])
    shift, sign = draw_weights(g, (cout, c["cg"], kh, kw), c["lo"], c["lo"] + c["span"])
    x = draw_x(g, (c["n"], cin, h, w), c["nbits"])
    bias = torch.randn(cout, generator=g) if c["bias"] else None
    res = shift_conv2d(x, shift, sign, c["frac"], bias, stride, pad, dil, groups)
    want = brute_conv(x.tolist(), shift.tolist(), sign.tolist(), c["frac"], None if bias is None else bias.tolist(),
                      stride, pad, dil, groups)
    assert_matches(res, *want)
    # the exact int64 path agrees with the float64 path whenever both apply
    res64 = shift_conv2d(x, shift, sign, c["frac"], bias, stride, pad, dil, groups, method="int64")
    assert torch.equal(res64.acc, res.acc) and bits(res64.out) == bits(res.out)


def test_conv2d_depthwise_and_int64_path_equals_brute_force():
    g = torch.Generator().manual_seed(2)
    # depthwise, stride 2, asymmetric padding, dilation 2, wide range -> int64 path
    shift, sign = draw_weights(g, (4, 1, 3, 3), -38, 0, p_zero=0.1)
    shift[:, 0, 1, 1] = -38
    sign[:, 0, 1, 1] = 1
    shift[:, 0, 0, 0] = 0
    sign[:, 0, 0, 0] = -1
    x = draw_x(g, (2, 4, 7, 6), 20)
    bias = torch.randn(4, generator=g)
    bound = accumulator_bound(shift, sign, int(x.abs().max()), acc_shift(shift, sign))
    assert 2 ** 53 <= bound < 2 ** 63
    res = shift_conv2d(x, shift, sign, 10, bias, stride=(2, 1), padding=(1, 2, 0, 1), dilation=2, groups=4)
    want = brute_conv(x.tolist(), shift.tolist(), sign.tolist(), 10, bias.tolist(), (2, 1), (1, 2, 0, 1), (2, 2), 4)
    assert max(abs(a) for _, a in want[0]) >= 2 ** 53
    assert_matches(res, *want)


def test_unbatched_conv_and_padding_forms():
    g = torch.Generator().manual_seed(3)
    shift, sign = draw_weights(g, (3, 2, 3, 3), -6, 0)
    x = draw_x(g, (2, 5, 5), 8)
    a = shift_conv2d(x, shift, sign, 4, padding=1)
    b = shift_conv2d(x.unsqueeze(0), shift, sign, 4, padding=(1, 1, 1, 1))
    c = shift_conv2d(x.unsqueeze(0), shift, sign, 4, padding=(1, 1))
    assert a.acc.shape == (3, 5, 5)
    assert torch.equal(a.acc, b.acc[0]) and torch.equal(b.acc, c.acc)


# ------------------------------------------------------------------------------------------- pieces
@SETTINGS
@given(st.integers(0, 2 ** 31), st.integers(-10, 5), st.integers(0, 12) | st.integers(50, 120),
       st.integers(0, 2 ** 20))
def test_acc_shift_and_bound(seed, lo, span, xmax):
    """Small spans take the int64 row-sum path, wide ones (>= 2**62) the exact Python-int path."""
    g = torch.Generator().manual_seed(seed)
    shift, sign = draw_weights(g, (4, 2, 2, 3), lo, lo + span, p_zero=0.4)
    s = shift.view(4, -1).tolist()
    sg = sign.view(4, -1).tolist()
    s0 = brute_s0(sum(s, []), sum(sg, []))
    assert acc_shift(shift, sign) == s0
    want = max(sum(2 ** (a - s0) for a, b in zip(r, rg) if b) for r, rg in zip(s, sg)) * xmax
    assert accumulator_bound(shift, sign, xmax, s0) == want


def test_acc_shift_no_weights_and_bound_errors():
    shift = torch.full((2, 3), -5, dtype=torch.int8)
    sign = torch.zeros((2, 3), dtype=torch.int8)
    assert acc_shift(shift, sign) == 0
    assert accumulator_bound(shift, sign, 100, 0) == 0
    res = shift_linear(torch.tensor([[1, 2, 3]]), shift, sign, 3, torch.tensor([0.5, -1.0]))
    assert res.acc.tolist() == [[0, 0]] and res.out.tolist() == [[0.5, -1.0]]
    sign[0, 0] = 1
    with pytest.raises(ValueError, match="above a used shift"):
        accumulator_bound(shift, sign, 1, 0)


@SETTINGS
@given(st.lists(st.integers(-(2 ** 63) + 1, 2 ** 63 - 1) | st.integers(-(2 ** 30), 2 ** 30), min_size=1,
                max_size=50))
def test_int64_to_float32_is_correctly_rounded(vals):
    out = int64_to_float32(torch.tensor(vals, dtype=torch.int64))
    assert out.tolist() == [float(int_to_f32(v)) for v in vals]


def test_int64_to_float32_ties():
    vals = []
    for e in range(25, 63):
        base = 1 << e
        ulp = 1 << (e - 23)
        for k in (0, 1, 2, 3):
            for off in (ulp // 2, ulp // 2 - 1, ulp // 2 + 1):
                vals += [base + k * ulp + off, -(base + k * ulp + off)]
    vals = [v for v in vals if abs(v) < 2 ** 63]
    assert int64_to_float32(torch.tensor(vals)).tolist() == [float(int_to_f32(v)) for v in vals]


def test_out_is_exact_product_rounded_once():
    """docs/numerics.md, Shift layer: float32(acc) * 2**(s0-F) equals the exact Σ w x rounded once (normal range)."""
    g = torch.Generator().manual_seed(4)
    shift, sign = draw_weights(g, (6, 40), -15, 0)
    x = draw_x(g, (5, 40), 16)
    res = shift_linear(x, shift, sign, 9)
    for (mi, ni), y in np.ndenumerate(res.out.numpy()):
        exact = sum(Fraction(int(sign[ni, k])) * Fraction(2) ** int(shift[ni, k]) * int(x[mi, k]) * Fraction(1, 2 ** 9)
                    for k in range(40))
        num = exact * 2 ** 24                          # shifts >= -15, F = 9: an integer
        assert num.denominator == 1
        assert y == int_to_f32(int(num)) * np.float32(2.0 ** -24)      # rounded once, then an exact scaling


def test_integer_input_dtypes():
    g = torch.Generator().manual_seed(5)
    shift, sign = draw_weights(g, (3, 6), -7, 0)
    x = draw_x(g, (4, 6), 8)
    want = shift_linear(x, shift, sign, 3)
    for dt in (torch.int8, torch.int16, torch.int32):
        got = shift_linear(x.to(dt), shift.to(torch.int32), sign.to(torch.int64), 3)
        assert torch.equal(got.acc, want.acc) and torch.equal(got.out, want.out)
    xu = x.abs().clamp(max=255).to(torch.uint8)
    assert torch.equal(shift_linear(xu, shift, sign, 3).acc, shift_linear(xu.long(), shift, sign, 3).acc)
    # batch dims of any rank
    xb = draw_x(g, (2, 3, 6), 8)
    assert shift_linear(xb, shift, sign, 3).acc.shape == (2, 3, 3)


def test_accumulator_overflow_is_refused():
    shift = torch.tensor([[100, -27]], dtype=torch.int8)
    sign = torch.tensor([[1, 1]], dtype=torch.int8)
    x = torch.tensor([[2 ** 10, 1]])
    with pytest.raises(ValueError, match="2\\*\\*63"):
        shift_linear(x, shift, sign, 0)


@pytest.mark.parametrize("call, match", [
    (lambda: shift_linear(torch.ones(2, 3, dtype=torch.int64), torch.zeros(4, 5, dtype=torch.int8),
                          torch.zeros(4, 5, dtype=torch.int8), 0), "x_q must have shape"),
    (lambda: shift_linear(torch.ones(2, 3), torch.zeros(4, 3, dtype=torch.int8),
                          torch.zeros(4, 3, dtype=torch.int8), 0), "integer dtype"),
    (lambda: shift_linear(torch.ones(2, 3, dtype=torch.int64), torch.zeros(4, 3),
                          torch.zeros(4, 3, dtype=torch.int8), 0), "integer dtype"),
    (lambda: shift_linear(torch.ones(2, 3, dtype=torch.int64), torch.zeros(4, 3, dtype=torch.int8),
                          torch.full((4, 3), 2, dtype=torch.int8), 0), "sign must hold"),
    (lambda: shift_linear(torch.ones(2, 3, dtype=torch.int64), torch.zeros(4, 3, dtype=torch.int8),
                          torch.zeros(4, 2, dtype=torch.int8), 0), "same shape"),
    (lambda: shift_linear(torch.ones(2, 3, dtype=torch.int64), torch.zeros(4, 3, dtype=torch.int8),
                          torch.zeros(4, 3, dtype=torch.int8), 0, torch.zeros(3)), "bias must have shape"),
    (lambda: shift_conv2d(torch.ones(1, 4, 5, 5, dtype=torch.int64), torch.zeros(2, 3, 3, 3, dtype=torch.int8),
                          torch.zeros(2, 3, 3, 3, dtype=torch.int8), 0), "channels"),
    (lambda: shift_conv2d(torch.ones(1, 4, 5, 5, dtype=torch.int64), torch.zeros(3, 2, 3, 3, dtype=torch.int8),
                          torch.zeros(3, 2, 3, 3, dtype=torch.int8), 0, groups=2), "divisible"),
    (lambda: shift_conv2d(torch.ones(1, 2, 2, 2, dtype=torch.int64), torch.zeros(2, 2, 3, 3, dtype=torch.int8),
                          torch.zeros(2, 2, 3, 3, dtype=torch.int8), 0), "empty output"),
    (lambda: shift_conv2d(torch.ones(2, 2, dtype=torch.int64), torch.zeros(2, 2, 1, 1, dtype=torch.int8),
                          torch.zeros(2, 2, 1, 1, dtype=torch.int8), 0), "input must be"),
    (lambda: shift_conv2d(torch.ones(1, 2, 4, 4, dtype=torch.int64), torch.zeros(2, 2, 1, 1, dtype=torch.int8),
                          torch.zeros(2, 2, 1, 1, dtype=torch.int8), 0, padding=(1, 2, 3)), "padding"),
    (lambda: shift_conv2d(torch.ones(1, 2, 4, 4, dtype=torch.int64), torch.zeros(2, 2, 1, 1, dtype=torch.int8),
                          torch.zeros(2, 2, 1, 1, dtype=torch.int8), 0, padding="same"), "same"),
    (lambda: shift_conv2d(torch.ones(1, 2, 4, 4, dtype=torch.int64), torch.zeros(2, 2, 1, 1, dtype=torch.int8),
                          torch.zeros(2, 2, 1, 1, dtype=torch.int8), 0, stride=0), "stride"),
    (lambda: shift_linear(torch.ones(1, 1, dtype=torch.int64), torch.tensor([[-100]], dtype=torch.int8),
                          torch.ones(1, 1, dtype=torch.int8), 60), "scale"),
])
def test_validation_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ------------------------------------------------------------------------------------------- float mode
def test_float_mode_reference():
    g = torch.Generator().manual_seed(6)
    shift, sign = draw_weights(g, (5, 12), -10, 2)
    x = torch.randn(3, 12, generator=g)
    bias = torch.randn(5, generator=g)
    y = shift_linear_float(x, shift, sign, bias)
    assert y.dtype == torch.float32
    for (mi, ni), v in np.ndenumerate(y.numpy()):
        exact = sum(Fraction(int(sign[ni, k])) * Fraction(2) ** int(shift[ni, k]) * Fraction(float(x[mi, k]))
                    for k in range(12))
        want = np.float32(np.float32(float(exact)) + bias[ni].numpy())
        assert v == want                      # float64 sum of 12 terms is exact here (<= 53-bit span)
    shift4, sign4 = draw_weights(g, (4, 2, 3, 3), -8, 0)
    xc = torch.randn(1, 4, 6, 6, generator=g)
    yc = shift_conv2d_float(xc, shift4, sign4, None, stride=2, padding=(1, 0, 2, 1), dilation=1, groups=2)
    w = sign4.double() * torch.exp2(shift4.double())
    want = F.conv2d(F.pad(xc.double(), (0, 1, 1, 2)), w, None, 2, 0, 1, 2).float()
    assert torch.equal(yc, want)


def test_exact_context_manager():
    from shiftcomp.nn import LinearShift
    m = torch.nn.Sequential(LinearShift(3, 4), torch.nn.ReLU(), LinearShift(4, 2))
    m[2].exact = True
    with reference.exact(m) as mm:
        assert mm is m and m[0].exact and m[2].exact
    assert (m[0].exact, m[2].exact) == (False, True)
