"""Quantizers against exact Python oracles (Fractions / Python ints) and PyTorch's own fake-quant."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from hypothesis_support import examples

from shiftcomp import quant
from shiftcomp.quant import (LN2, act_int_range, fake_quant_act, pow2, ps_fake_weight, ps_round, q_fake_weight,
                             q_round, round_ste, to_fixed)

SETTINGS = settings(max_examples=examples(80), deadline=None)
f32 = st.floats(width=32, allow_nan=False)


# ------------------------------------------------------------------------------------------- oracles
def q_oracle(w: float, lo: int, hi: int) -> tuple[int, int]:
    """Exact Q rounding: sign(w); shift = k minimising |log2|w| - k| (ties to even), |w| clamped first."""
    if w == 0:
        return lo, 0
    sign = 1 if w > 0 else -1
    a = min(max(Fraction(abs(w)) if math.isfinite(w) else Fraction(2) ** hi, Fraction(2) ** lo), Fraction(2) ** hi)
    k = math.floor(math.log2(a))                       # rough; fix exactly below
    while Fraction(2) ** k > a:
        k -= 1
    while Fraction(2) ** (k + 1) <= a:
        k += 1
    # a in [2**k, 2**(k+1)): cut at sqrt(2) * 2**k  <=>  a**2 vs 2**(2k+1) (never equal: irrational)
    shift = k + 1 if a * a > Fraction(2) ** (2 * k + 1) else k
    return min(max(shift, lo), hi), sign


def fixed_oracle(x: float, I: int, F: int, rounding: str) -> int:  # noqa: E741
    qmin, qmax = -(2 ** (I + F - 1)), 2 ** (I + F - 1) - 1
    with np.errstate(over="ignore"):
        x32 = float(np.float32(x))
    if math.isinf(x32):
        return qmax if x32 > 0 else qmin
    v = Fraction(x32) * 2 ** F
    r = round(v) if rounding == "nearest" else math.floor(v)     # Fraction.__round__: ties to even
    return min(max(r, qmin), qmax)


# ------------------------------------------------------------------------------------------- pow2
def test_pow2_exact():
    k = torch.arange(-149, 128)
    assert pow2(k).tolist() == [2.0 ** int(i) for i in k]
    k = torch.arange(-1022, 1024)
    assert pow2(k, torch.float64).tolist() == [2.0 ** int(i) for i in k]
    assert pow2(torch.tensor([3.0, -2.0])).tolist() == [8.0, 0.25]
    with pytest.raises(ValueError):
        pow2(torch.tensor([1.5]))
    with pytest.raises(ValueError):
        pow2(torch.tensor([2000]))


# ------------------------------------------------------------------------------------------- Q
ranges = st.tuples(st.integers(-20, 3), st.integers(0, 6)).map(lambda t: (t[0], t[0] + t[1]))


@SETTINGS
@given(st.lists(f32, min_size=1, max_size=40), ranges)
def test_q_round_matches_exact_oracle(ws, rng):
    lo, hi = rng
    w = torch.tensor(ws, dtype=torch.float32)
    shift, sign = q_round(w, lo, hi)
    assert shift.dtype == torch.int8 and sign.dtype == torch.int8
    assert [(int(a), int(b)) for a, b in zip(shift, sign)] == [q_oracle(v, lo, hi) for v in ws]


@SETTINGS
@given(st.integers(-18, 2), st.integers(-3, 3), st.sampled_from([1, -1]), st.sampled_from([torch.float32,
                                                                                             torch.float64]))
def test_q_round_at_the_log_cut(k, ulps, s, dtype):
    """Floats right at the cut sqrt(2)*2**(k-1) = 0.7071*2**k and a few ulps either side."""
    npdt = np.float32 if dtype == torch.float32 else np.float64
    c = npdt(math.sqrt(0.5) * 2.0 ** k)
    for _ in range(abs(ulps)):
        c = np.nextafter(c, npdt(np.inf) if ulps > 0 else npdt(0))
    w = float(c) * s
    lo, hi = -20, 3
    shift, sign = q_round(torch.tensor([w], dtype=dtype), lo, hi)
    assert (int(shift), int(sign)) == q_oracle(w, lo, hi)


def test_q_round_edges():
    lo, hi = -4, 1
    w = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 2.0 ** -4, 2.0 ** -5, 2.0, 3.0, 1e30, float("inf"), -float("inf"),
                      2.0 ** -4.5 * 1.0001, 2.0 ** -4.5 * 0.9999])
    shift, sign = q_round(w, lo, hi)
    assert sign.tolist() == [0, 0, 1, -1, 1, 1, 1, 1, 1, 1, -1, 1, 1]
    assert shift.tolist() == [lo, lo, lo, lo, -4, -4, 1, 1, 1, 1, 1, -4, -4]
    with pytest.raises(ValueError, match="NaN"):
        q_round(torch.tensor([float("nan")]), lo, hi)
    # positive shifts (weights > 1)
    shift, sign = q_round(torch.tensor([5.0, 6.0, -100.0]), 0, 5)
    assert shift.tolist() == [2, 3, 5] and sign.tolist() == [1, 1, -1]


def test_q_round_agrees_with_log2_away_from_cuts():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20000, generator=g) * 0.1
    lo, hi = -15, 0
    shift, sign = q_round(w, lo, hi)
    ref = torch.round(torch.log2(w.abs().clamp(2.0 ** lo, 2.0 ** hi)))
    assert torch.equal(shift.float(), ref) and torch.equal(sign.float(), torch.sign(w))


@SETTINGS
@given(st.lists(f32.filter(lambda v: abs(v) < 1e30), min_size=1, max_size=30), ranges)
def test_q_fake_weight_forward_and_ste(ws, rng):
    lo, hi = rng
    w = torch.tensor(ws, requires_grad=True)
    wq = q_fake_weight(w, lo, hi)
    shift, sign = q_round(w.detach(), lo, hi)
    assert torch.equal(wq.detach(), sign.float() * torch.tensor([2.0 ** int(s) for s in shift]))
    g = torch.randn(len(ws))
    wq.backward(g)
    assert torch.equal(w.grad, g)                  # straight-through: grad(w) = grad(w_q)


def test_q_fake_weight_nan_propagates():
    assert torch.isnan(q_fake_weight(torch.tensor([float("nan"), 1.0]), -4, 0)[0])


# ------------------------------------------------------------------------------------------- PS
@SETTINGS
@given(st.lists(st.tuples(st.floats(-30, 10), st.floats(-3, 3)), min_size=1, max_size=30), ranges)
def test_ps_round_matches_formula(params, rng):
    lo, hi = rng
    sh = torch.tensor([p[0] for p in params], dtype=torch.float32)
    sg = torch.tensor([p[1] for p in params], dtype=torch.float32)
    shift, sign = ps_round(sh, sg, lo, hi)
    for a, b, s, p in zip(shift.tolist(), sign.tolist(), sh.tolist(), sg.tolist()):
        exp_sign = int(np.sign(round(p)))                    # Python round: ties to even, like torch.round
        exp_shift = round(min(max(s, lo), hi)) if exp_sign != 0 else lo
        assert (a, b) == (exp_shift, exp_sign)


def test_ps_round_ties_and_sign_zero():
    sh = torch.tensor([-2.5, -1.5, 0.5, -3.0, -3.0, -3.0, -3.0])
    sg = torch.tensor([1.0, 1.0, 1.0, 0.5, -0.5, 0.49, 1.5])
    shift, sign = ps_round(sh, sg, -8, 0)
    assert sign.tolist() == [1, 1, 1, 0, 0, 0, 1]
    assert shift.tolist() == [-2, -2, 0, -8, -8, -8, -3]


@SETTINGS
@given(st.integers(0, 2 ** 31), ranges, st.booleans())
def test_ps_fake_weight_gradients(seed, rng, freeze):
    lo, hi = rng
    g = torch.Generator().manual_seed(seed)
    sh = (torch.rand(7, 5, generator=g) * (hi - lo + 4) + lo - 2).requires_grad_(True)
    sg = (torch.rand(7, 5, generator=g) * 2 - 1).requires_grad_(not freeze)
    w = ps_fake_weight(sh, sg, lo, hi)
    s_q = torch.round(sh.detach().clamp(lo, hi))
    p_q = torch.sign(torch.round(sg.detach()))
    assert torch.equal(w.detach(), p_q * torch.exp2(s_q))
    up = torch.randn(7, 5, generator=g)
    w.backward(up)
    expect = up * p_q * torch.exp2(s_q) * LN2                 # grad(shift) = g * sign_q * 2**shift_q * ln 2
    assert torch.allclose(sh.grad, expect, rtol=2 ** -22, atol=0)
    if freeze:
        assert sg.grad is None
    else:
        assert torch.equal(sg.grad, up)                       # grad(sign) = g


def test_round_ste():
    x = torch.tensor([0.5, 1.5, -2.5, 0.3], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 2.0, -2.0, 0.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0] * 4


# ------------------------------------------------------------------------------------------- activations
formats = st.tuples(st.integers(1, 16), st.integers(0, 16))


def test_act_int_range():
    assert act_int_range(3, 5) == (-128, 127)
    assert act_int_range(16, 16) == (-(2 ** 31), 2 ** 31 - 1)
    assert act_int_range(1, 0) == (-1, 0)
    with pytest.raises(ValueError):
        act_int_range(0, 4)
    with pytest.raises(ValueError):
        act_int_range(20, 13)


@SETTINGS
@given(st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=30), formats,
       st.sampled_from(["nearest", "floor"]))
def test_to_fixed_matches_oracle(xs, fmt, rounding):
    I, F = fmt  # noqa: E741
    x = torch.tensor(xs, dtype=torch.float64)          # cast to float32 inside, as the compiled code does
    q = to_fixed(x, I, F, rounding)
    assert q.dtype == torch.int64
    assert q.tolist() == [fixed_oracle(v, I, F, rounding) for v in xs]


@SETTINGS
@given(formats, st.sampled_from(["nearest", "floor"]), st.data())
def test_to_fixed_ties_and_clamp_edges(fmt, rounding, data):
    I, F = fmt  # noqa: E741
    qmin, qmax = act_int_range(I, F)
    k = data.draw(st.integers(qmin - 3, qmax + 3))
    frac = data.draw(st.sampled_from([0.0, 0.5, -0.5, 0.25, 0.75]))
    x = (k + frac) * 2.0 ** -F                          # exactly representable; 0.5 = a tie
    assume(float(np.float32(x)) == x)
    q = int(to_fixed(torch.tensor([x]), I, F, rounding))
    assert q == fixed_oracle(x, I, F, rounding)
    assert qmin <= q <= qmax


@pytest.mark.parametrize("rounding", ["nearest", "floor"])
@pytest.mark.parametrize("I, F", [(16, 16), (1, 31), (32, 0), (3, 5), (1, 0)])
def test_to_fixed_extreme_formats(I, F, rounding):  # noqa: E741
    qmin, qmax = act_int_range(I, F)
    xs = [qmax * 2.0 ** -F, (qmax + 0.5) * 2.0 ** -F, (qmax + 1) * 2.0 ** -F, qmin * 2.0 ** -F,
          (qmin - 0.5) * 2.0 ** -F, (qmin - 1) * 2.0 ** -F, 1e38, -1e38, float("inf"), -float("inf"), 0.0, -0.0]
    q = to_fixed(torch.tensor(xs, dtype=torch.float64), I, F, rounding)
    assert q.tolist() == [fixed_oracle(v, I, F, rounding) for v in xs]
    assert q.max() <= qmax and q.min() >= qmin
    y = fake_quant_act(torch.tensor(xs, dtype=torch.float64), I, F, rounding)
    assert y.tolist() == [v * 2.0 ** -F for v in q.tolist()]     # float64: exact


def test_to_fixed_errors():
    with pytest.raises(ValueError, match="NaN"):
        to_fixed(torch.tensor([float("nan")]), 3, 5)
    with pytest.raises(TypeError):
        to_fixed(torch.tensor([1]), 3, 5)
    with pytest.raises(ValueError, match="rounding"):
        to_fixed(torch.tensor([1.0]), 3, 5, "up")


@SETTINGS
@given(st.integers(0, 2 ** 31), st.tuples(st.integers(1, 12), st.integers(0, 12)))
def test_fake_quant_matches_torch_fake_quantize(seed, fmt):
    """Nearest rounding + clip STE is torch.fake_quantize_per_tensor_affine with scale 2**-F (forward and grad)."""
    I, F = fmt  # noqa: E741
    qmin, qmax = act_int_range(I, F)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, generator=g) * 2.0 ** (I - 1) * 1.5
    x[:8] = (torch.randint(qmin - 2, qmax + 3, (8,), generator=g) + 0.5) * 2.0 ** -F   # ties, edges
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y1 = fake_quant_act(x1, I, F, "nearest", "clip")
    y2 = torch.fake_quantize_per_tensor_affine(x2, 2.0 ** -F, 0, qmin, qmax)
    assert torch.equal(y1, y2)
    up = torch.randn(64, generator=g)
    y1.backward(up)
    y2.backward(up)
    assert torch.equal(x1.grad, x2.grad)


@SETTINGS
@given(st.integers(0, 2 ** 31), formats, st.sampled_from(["nearest", "floor"]),
       st.sampled_from(["clip", "identity"]))
def test_fake_quant_forward_and_grad_formula(seed, fmt, rounding, grad):
    I, F = fmt  # noqa: E741
    qmin, qmax = act_int_range(I, F)
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(100, generator=g) * 2.0 ** (I - 1) * 1.5).requires_grad_(True)
    y = fake_quant_act(x, I, F, rounding, grad)
    q = to_fixed(x.detach(), I, F, rounding)
    assert torch.equal(y.detach(), q.float() * 2.0 ** -F)          # I + F <= 32 here; q*2**-F exact if <= 24 bits
    up = torch.randn(100, generator=g)
    y.backward(up)
    v = x.detach() * 2.0 ** F
    r = torch.round(v) if rounding == "nearest" else torch.floor(v)
    inside = (r >= qmin) & (r <= qmax)
    assert torch.equal(x.grad, up if grad == "identity" else torch.where(inside, up, torch.zeros_like(up)))


def test_fake_quant_wide_format_single_rounding():
    """I + F = 32: x_q needs 31 bits; the float32 result is x_q * 2**-F rounded once (not the clamp bound)."""
    x = torch.tensor([3e9, -3e9, 12345.678], dtype=torch.float32)
    q = to_fixed(x, 32, 0)
    assert q.tolist() == [2 ** 31 - 1, -(2 ** 31), 12346]
    y = fake_quant_act(x, 32, 0)
    assert y.tolist() == [float(np.float32(2 ** 31 - 1)), -(2.0 ** 31), 12346.0]
    assert quant.fake_quant_act(x.double(), 32, 0).tolist() == [2 ** 31 - 1, -(2 ** 31), 12346]


def test_q_round_float32_fast_path_equals_float64_path():
    """The float32 bit-level fast path and the float64 frexp path agree, cut points and clamp edges included."""
    from shiftcomp.quant import _q_shift_sign

    g = torch.Generator().manual_seed(0)
    cuts = torch.tensor([2.0 ** k * math.sqrt(0.5) for k in range(-20, 3)], dtype=torch.float32)
    near = torch.cat([cuts, torch.nextafter(cuts, torch.full_like(cuts, 0.0)),
                      torch.nextafter(cuts, torch.full_like(cuts, 10.0))])
    w = torch.cat([near, -near, torch.randn(20000, generator=g) * 0.1, torch.tensor([0.0, -0.0, 1e-30, 1e30])])
    for lo, hi in [(-15, 0), (-7, 3), (-126, 127), (0, 0)]:
        s32, g32 = _q_shift_sign(w, lo, hi)
        s64, g64 = _q_shift_sign(w.double(), lo, hi)
        assert torch.equal(s32, s64) and torch.equal(g32, g64)
