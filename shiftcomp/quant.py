"""Quantizers of shift networks: weights to ``sign * 2**shift`` (Q and PS), activations to fixed point.

Everything here follows docs/numerics.md (Weights, Activations):

* **Q weights** (DeepShift-Q): ``sign = sign(w)`` (an exact 0.0 gives sign 0), ``|w|`` clamped to
  ``[2**lo, 2**hi]``, ``shift = round(log2|w|)`` with ties to even. The rounding is computed *exactly*: the
  cut between ``2**(k-1)`` and ``2**k`` is the irrational ``sqrt(2) * 2**(k-1) ≈ 0.7071 * 2**k``, which no
  float equals, so ``shift`` is decided by comparing the frexp mantissa of ``|w|`` (taken in float64,
  exact for every float dtype) with ``sqrt(1/2)``. This equals ``torch.round(torch.log2(|w|))`` except
  for the few floats within float32 rounding error of a cut, where ``log2`` itself is inexact.
  Backward: straight-through, ``grad(w) = grad(w_q)``.
* **PS weights** (DeepShift-PS): ``shift_q = round(clamp(shift, lo, hi))``, ``sign_q = sign(round(sign))``
  (``|sign| <= 0.5`` gives 0; ``torch.round`` ties to even). Backward:
  ``grad(shift) = g * sign_q * 2**shift_q * ln 2``, ``grad(sign) = g``.
* **Activations** ``Q(I, F)``: ``x_q = clamp(round_mode(x * 2**F), -2**(I+F-1), 2**(I+F-1) - 1)``.
  ``x`` is first cast to float32 and ``x * 2**F`` is a float32 multiply by a power of two, as the compiled
  code does; that multiply is exact (no underflow since ``F >= 0``; an overflow to ``inf`` is clamped,
  exactly as the exact product would be). ``round_mode`` is ``torch.round`` (nearest, ties to even) or
  ``torch.floor``. The clamp bounds are applied without rounding them to float32 (``2**31 - 1`` is not a
  float32), so every ``I + F <= 32`` is exact.

* **Zero-free codes** (DenseShift, ``zero_free=True``): no zero weight. Q takes ``sign(0.0)`` (and ``-0.0``)
  as +1, so an exact zero becomes ``+2**lo``; PS rounds the sign to ``+1 if sign_p >= 0 else -1``.

Integer results (``shift``, ``sign``) are ``int8``; ``to_fixed`` returns ``int64``. All functions work on
any device; none modifies its inputs.
"""
from __future__ import annotations

import math

import torch

from shiftcomp.config import ACT_GRADS, ROUNDINGS

__all__ = [
    "LN2", "pow2", "q_round", "q_fake_weight", "ps_round", "ps_fake_weight", "act_int_range",
    "to_fixed", "fake_quant_act", "round_ste",
]

LN2 = math.log(2.0)
# float64 nearest to sqrt(1/2); it is *above* the true value (0.70710678118654757... > 0.70710678118654752...),
# so for any double m: m >= _SQRT_HALF  <=>  m > sqrt(1/2) (exact comparison for every float input).
_SQRT_HALF = math.sqrt(0.5)


# ---------------------------------------------------------------------------------------------- helpers
def _check_bounds(lo: int, hi: int) -> tuple[int, int]:
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"shift range needs lo <= hi, got ({lo}, {hi})")
    if lo < -1022 or hi > 1023:
        raise ValueError(f"shift range ({lo}, {hi}) outside the float64 exponent range [-1022, 1023]")
    return lo, hi


def _pow2_unchecked(shift: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Exact ``2.0**shift`` for an integer-valued tensor with entries in [-1022, 1023], in ``dtype``.

    Built from float64 bits (``(shift + 1023) << 52``) and cast once: exact wherever the power of two is
    representable in ``dtype`` (subnormals included), correctly rounded (to 0 / inf) otherwise.
    """
    bits = (shift.to(torch.int64) + 1023) << 52
    return bits.view(torch.float64).to(dtype)


def pow2(shift: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Exact powers of two: ``2.0**shift`` elementwise.

    Args:
        shift: integer tensor (any integer dtype, or a float tensor holding integers), entries in
            ``[-1022, 1023]``.
        dtype: floating result dtype.

    Returns:
        ``2**shift`` in ``dtype``; exact whenever representable (float32: ``-149 <= shift <= 127``).
        Unlike ``torch.pow``/``torch.exp2`` this never depends on a libm's accuracy.
    """
    if shift.numel():
        lo, hi = int(shift.min()), int(shift.max())
        if lo < -1022 or hi > 1023:
            raise ValueError(f"pow2: shifts must lie in [-1022, 1023], got [{lo}, {hi}]")
        if shift.is_floating_point() and not bool(torch.all(shift == torch.round(shift))):
            raise ValueError("pow2: shift holds non-integer values")
    return _pow2_unchecked(shift, dtype)


# Smallest float32 mantissa field (23 bits) whose significand 1.m is >= sqrt(2): sqrt(2) is irrational, so
# ``m >= _SQRT2_MANT_F32`` is exactly ``1.m >= sqrt(2)`` (no ties).
_SQRT2_MANT_F32 = math.ceil((math.sqrt(2.0) - 1.0) * 2 ** 23)


def _zero_free_sign(sign: torch.Tensor) -> torch.Tensor:
    """DenseShift: a zero sign (from an exact 0.0, or a PS sign rounding to 0 from above) becomes +1."""
    return torch.where(sign == 0, torch.ones_like(sign), sign)


def _q_shift_sign_f32(w: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast path of :func:`_q_shift_sign` for float32 weights and normal ranges (``-126 <= lo``, ``hi <= 127``):
    the exponent and mantissa are read from the float32 bits (10-20x faster than frexp in float64)."""
    wd = w.detach()
    sign = torch.sign(wd)
    bits = wd.abs().clamp(2.0 ** lo, 2.0 ** hi).view(torch.int32)   # normal floats: exponent field >= 1
    expo = (bits >> 23) - 127
    shift = torch.where((bits & 0x7FFFFF) >= _SQRT2_MANT_F32, expo + 1, expo).clamp(lo, hi)
    shift = torch.where(sign == 0, torch.full_like(shift, lo), shift)
    return shift.to(torch.int64), sign.to(torch.float64)


def _q_shift_sign(w: torch.Tensor, lo: int, hi: int, zero_free: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Q rounding as (shift int64, sign float64 in {-1, 0, 1}); zero weights get shift ``lo`` (zero-free: +1)."""
    if zero_free:
        shift, sign = _q_shift_sign(w, lo, hi)
        return shift, _zero_free_sign(sign)
    if w.dtype == torch.float32 and -126 <= lo and hi <= 127:
        return _q_shift_sign_f32(w, lo, hi)
    wd = w.detach().to(torch.float64)
    sign = torch.sign(wd)
    a = wd.abs().clamp(2.0 ** lo, 2.0 ** hi)          # 2**lo, 2**hi exact doubles; inf -> 2**hi
    mant, expo = torch.frexp(a)                         # a = mant * 2**expo, mant in [0.5, 1)
    expo = expo.to(torch.int64)
    shift = torch.where(mant >= _SQRT_HALF, expo, expo - 1).clamp(lo, hi)
    shift = torch.where(sign == 0, torch.full_like(shift, lo), shift)
    return shift, sign


def _ps_shift_sign(shift_p: torch.Tensor, sign_p: torch.Tensor, lo: int,
                   hi: int, zero_free: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """PS rounding as float tensors (shift_q, sign_q) in the parameters' dtypes."""
    shift_q = torch.round(shift_p.detach().clamp(lo, hi))
    if zero_free:
        sign_q = torch.where(sign_p.detach() >= 0, 1.0, -1.0).to(sign_p.dtype)
    else:
        sign_q = torch.sign(torch.round(sign_p.detach()))
    return shift_q, sign_q


# ---------------------------------------------------------------------------------------------- Q mode
def q_round(w: torch.Tensor, lo: int, hi: int, zero_free: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepShift-Q rounding of float weights to integer shift/sign (docs/numerics.md, Weights).

    Args:
        w: float weights (any shape, any float dtype). Must not contain NaN.
        lo, hi: shift range (integers, ``lo <= hi``), i.e. magnitudes ``2**lo .. 2**hi``.
        zero_free: DenseShift codes: an exact ±0.0 gets sign +1 (weight ``2**lo``).

    Returns:
        ``(shift, sign)``, both ``int8`` shaped like ``w``: ``sign = sign(w)`` in {-1, 0, +1} (0 only for an
        exact ±0.0, never with ``zero_free``), ``shift = round(log2(clamp(|w|, 2**lo, 2**hi)))`` in ``[lo, hi]`` (exact log-domain
        rounding, cut at ``sqrt(2) * 2**(k-1)``). Where ``sign == 0`` the shift is reported as ``lo``.
    """
    lo, hi = _check_bounds(lo, hi)
    if lo < -128 or hi > 127:
        raise ValueError(f"q_round: shift range ({lo}, {hi}) does not fit int8")
    if not w.is_floating_point():
        raise TypeError(f"q_round: weights must be a float tensor, got {w.dtype}")
    if bool(torch.isnan(w).any()):
        raise ValueError("q_round: weights contain NaN")
    shift, sign = _q_shift_sign(w, lo, hi, zero_free)
    return shift.to(torch.int8), sign.to(torch.int8)


class _QFakeWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, lo: int, hi: int,  # type: ignore[override]
                zero_free: bool = False) -> torch.Tensor:
        shift, sign = _q_shift_sign(w, lo, hi, zero_free)
        wq = (sign * _pow2_unchecked(shift, torch.float64)).to(w.dtype)   # exact where representable
        return torch.where(torch.isnan(w), w, wq)                          # NaN propagates

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return g, None, None, None


def q_fake_weight(w: torch.Tensor, lo: int, hi: int, zero_free: bool = False) -> torch.Tensor:
    """Differentiable Q fake-quantisation of weights.

    Args:
        w: float weights (any shape/dtype); ``lo, hi``: shift range.

    Returns:
        ``sign * 2**shift`` (the values of :func:`q_round`) in ``w.dtype``, exactly (``w.dtype`` float32:
        exact for every allowed range). NaN entries stay NaN. Backward: straight-through,
        ``grad(w) = grad(output)`` everywhere (no clip mask, like DeepShift).
    """
    lo, hi = _check_bounds(lo, hi)
    return _QFakeWeight.apply(w, lo, hi, bool(zero_free))


# ---------------------------------------------------------------------------------------------- PS mode
def ps_round(shift_p: torch.Tensor, sign_p: torch.Tensor, lo: int,
             hi: int, zero_free: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepShift-PS rounding of the float ``shift``/``sign`` parameters (docs/numerics.md, Weights).

    Args:
        shift_p: float shift parameter (any shape); values are clamped to ``[lo, hi]`` then rounded
            (``torch.round``: ties to even).
        sign_p: float sign parameter, same shape; ``sign_q = sign(round(sign_p))`` (``|sign_p| <= 0.5`` -> 0).
        lo, hi: shift range (integers).
        zero_free: DenseShift codes: ``sign_q = +1 if sign_p >= 0 else -1`` (never 0).

    Returns:
        ``(shift, sign)`` ``int8`` tensors; where ``sign == 0`` the shift is reported as ``lo``.
    """
    lo, hi = _check_bounds(lo, hi)
    if shift_p.shape != sign_p.shape:
        raise ValueError(f"ps_round: shift {tuple(shift_p.shape)} and sign {tuple(sign_p.shape)} differ in shape")
    if bool(torch.isnan(shift_p).any()) or bool(torch.isnan(sign_p).any()):
        raise ValueError("ps_round: shift/sign parameters contain NaN")
    shift_q, sign_q = _ps_shift_sign(shift_p, sign_p, lo, hi, zero_free)
    shift_q = torch.where(sign_q == 0, torch.full_like(shift_q, lo), shift_q)
    return shift_q.to(torch.int8), sign_q.to(torch.int8)


class _PSFakeWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, shift_p: torch.Tensor, sign_p: torch.Tensor, lo: int,  # type: ignore[override]
                hi: int, zero_free: bool = False) -> torch.Tensor:
        shift_q, sign_q = _ps_shift_sign(shift_p, sign_p, lo, hi, zero_free)
        nan = torch.isnan(shift_p) | torch.isnan(sign_p)
        shift_q = torch.where(nan, torch.zeros_like(shift_q), shift_q)
        w = (sign_q.to(torch.float64) * _pow2_unchecked(shift_q, torch.float64)).to(shift_p.dtype)
        w = torch.where(nan, torch.full_like(w, float("nan")), w)
        ctx.save_for_backward(w)
        return w

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (w,) = ctx.saved_tensors
        g_shift = g * w * LN2 if ctx.needs_input_grad[0] else None      # g * sign_q * 2**shift_q * ln 2
        g_sign = g if ctx.needs_input_grad[1] else None                   # straight-through
        return g_shift, g_sign, None, None, None


def ps_fake_weight(shift_p: torch.Tensor, sign_p: torch.Tensor, lo: int, hi: int,
                   zero_free: bool = False) -> torch.Tensor:
    """Differentiable PS weight ``sign_q * 2**shift_q`` (values of :func:`ps_round`, exact, NaN propagates).

    Args:
        shift_p, sign_p: float parameters of equal shape and dtype; ``lo, hi``: shift range.

    Returns:
        The weight in ``shift_p.dtype``. Backward (docs/numerics.md, Weights): ``grad(shift_p) = g * sign_q * 2**shift_q * ln 2``
        (no mask: like DeepShift, which clamps ``shift`` in place instead), ``grad(sign_p) = g``.
    """
    lo, hi = _check_bounds(lo, hi)
    if shift_p.shape != sign_p.shape:
        raise ValueError(f"ps_fake_weight: shift {tuple(shift_p.shape)} and sign {tuple(sign_p.shape)} "
                         f"differ in shape")
    return _PSFakeWeight.apply(shift_p, sign_p, lo, hi, bool(zero_free))


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return g


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``torch.round(x)`` (ties to even) forward, identity gradient; exact (unlike ``x + (round(x)-x).detach()``)."""
    return _RoundSTE.apply(x)


# ---------------------------------------------------------------------------------------------- activations
def _check_act(i_bits: int, f_bits: int, rounding: str) -> tuple[int, int]:
    i_bits, f_bits = int(i_bits), int(f_bits)
    if i_bits < 1 or f_bits < 0 or i_bits + f_bits > 32:
        raise ValueError(f"activation format Q(I={i_bits}, F={f_bits}) needs I >= 1, F >= 0, I + F <= 32")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return i_bits, f_bits


def act_int_range(I: int, F: int) -> tuple[int, int]:  # noqa: E741 - names from the spec
    """Integer range of the ``Q(I, F)`` format: ``(-2**(I+F-1), 2**(I+F-1) - 1)`` (Python ints).

    The real values represented are ``x_q * 2**-F``, i.e. ``[-2**(I-1), 2**(I-1) - 2**-F]``.
    """
    I, F = _check_act(I, F, "nearest")  # noqa: E741
    n = I + F
    return (-(2 ** (n - 1)), 2 ** (n - 1) - 1)


def _round_scaled(x: torch.Tensor, F: int, rounding: str) -> torch.Tensor:
    """``round_mode(float32(x) * 2**F)`` as a float32 tensor (exact power-of-two multiply)."""
    v = x.detach().to(torch.float32) * (2.0 ** F)
    return torch.round(v) if rounding == "nearest" else torch.floor(v)


def _clamp_to_int(r: torch.Tensor, n: int) -> torch.Tensor:
    """Clamp the integer-valued float32 ``r`` to ``[-2**(n-1), 2**(n-1) - 1]`` and return int64 (exact)."""
    top = 2.0 ** (n - 1)                                   # exact in float32; qmax + 1
    q = r.clamp(-top, top).to(torch.int64)                 # inf -> ±2**(n-1); every value now exact
    return q.clamp(max=2 ** (n - 1) - 1)


def to_fixed(x: torch.Tensor, I: int, F: int, rounding: str = "nearest") -> torch.Tensor:  # noqa: E741
    """Quantise activations to the fixed-point format ``Q(I, F)`` (docs/numerics.md, Activations).

    Args:
        x: float tensor (any shape/device; cast to float32 first). Must not contain NaN.
        I: integer bits including the sign (``>= 1``); F: fraction bits (``>= 0``); ``I + F <= 32``.
        rounding: ``"nearest"`` (``torch.round``, ties to even) or ``"floor"``.

    Returns:
        ``int64`` tensor ``x_q = clamp(round_mode(x * 2**F), -2**(I+F-1), 2**(I+F-1) - 1)`` shaped like ``x``;
        it stands for the value ``x_q * 2**-F``. ``±inf`` saturate.
    """
    I, F = _check_act(I, F, rounding)  # noqa: E741
    if not x.is_floating_point():
        raise TypeError(f"to_fixed: x must be a float tensor, got {x.dtype}")
    if bool(torch.isnan(x).any()):
        raise ValueError("to_fixed: x contains NaN, which has no fixed-point value")
    return _clamp_to_int(_round_scaled(x, F, rounding), I + F)


class _FakeQuantAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, I: int, F: int, rounding: str,  # type: ignore[override]  # noqa: E741
                grad: str) -> torch.Tensor:
        n = I + F
        r = _round_scaled(x, F, rounding)
        top = 2.0 ** (n - 1)
        if grad == "clip":
            ctx.save_for_backward((r >= -top) & (r < top))      # r integer: r <= qmax <=> r < qmax + 1
        if n <= 24:                                             # every x_q is a float32: stay in float32
            y = r.clamp(-top, top - 1.0) * (2.0 ** -F)
        else:                                                   # x_q may need 31 bits: via int64
            y = _clamp_to_int(r, n).to(torch.float64) * (2.0 ** -F)
        y = y.to(x.dtype)                                       # one rounding at most (only for n > 24)
        return torch.where(torch.isnan(x), x, y)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        if ctx.saved_tensors:
            (mask,) = ctx.saved_tensors
            g = torch.where(mask, g, torch.zeros_like(g))
        return g, None, None, None, None


def fake_quant_act(x: torch.Tensor, I: int, F: int, rounding: str = "nearest",  # noqa: E741
                   grad: str = "clip") -> torch.Tensor:
    """Differentiable fake quantisation of activations to ``Q(I, F)``.

    Args:
        x: float tensor; I, F, rounding: as :func:`to_fixed`.
        grad: ``"clip"``: straight-through where the rounded value ``round_mode(x * 2**F)`` lies inside
            ``[qmin, qmax]``, zero where the clamp is active (the convention of
            ``torch.fake_quantize_per_tensor_affine``); ``"identity"``: straight-through everywhere.

    Returns:
        ``to_fixed(x) * 2**-F`` in ``x.dtype`` (exact when ``I + F <= 24`` or ``x`` is float64; otherwise
        rounded once to nearest). NaN propagates.
    """
    I, F = _check_act(I, F, rounding)  # noqa: E741
    if grad not in ACT_GRADS:
        raise ValueError(f"grad must be one of {ACT_GRADS}, got {grad!r}")
    if not x.is_floating_point():
        raise TypeError(f"fake_quant_act: x must be a float tensor, got {x.dtype}")
    return _FakeQuantAct.apply(x, I, F, rounding, grad)
