"""The exact integer reference of shift layers: the oracle every compiled kernel must equal bit for bit.

For one output element with inputs ``x_q[k]`` (fixed-point integers, padded positions 0) and weights
``(sign[k], shift[k])`` (docs/numerics.md, Shift layer)::

    s0   = min shift over the weights with sign != 0 (0 if there is none)      -- per layer
    acc  = Σ_k sign[k] * (x_q[k] << (shift[k] - s0))                          -- exact, int64
    out  = float32(acc) * float32(2**(s0 - F))  [+ bias, a float32 add]

``float32(acc)`` is one rounding to nearest even; the multiply by the power of two is exact unless the
result is subnormal or overflows, so ``out`` is the exact dot product ``Σ w x`` rounded once to float32
(then ``+ bias``), whatever ``s0``, summation order or schedule.

How ``acc`` is computed exactly (``method="auto"``):

* ``float64``: while the proven bound ``accumulator_bound(...) < 2**53`` every product and every partial sum
  is an integer below ``2**53``, so ``F.linear``/``F.conv2d`` in float64 on the integer-valued tensors
  ``x_q`` and ``sign * 2**(shift - s0)`` is exact in any summation order (cuDNN is disabled for it on CUDA).
* ``int64``: for ``2**53 <= bound < 2**63``, an exact int64 im2col + int64 matmul (computed on the CPU).
* ``bound >= 2**63`` raises ``ValueError``: no int64 accumulator can hold it.

``float32(acc)`` is computed as ``acc.to(float32)`` when ``|acc| < 2**53`` (exact via any route) and by
rounding to odd at 53 bits first otherwise, so the conversion is a single correct rounding on every backend.

Float-activation mode (no fixed-point format): :func:`shift_linear_float` / :func:`shift_conv2d_float`
compute ``Σ x * sign * 2**shift`` in float64, round once to float32, then add the float32 bias. That is a
float64 reference, not a bit-exact one (docs/numerics.md, Float activations: compared within a summation bound).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from shiftcomp.config import MIN_SCALE_EXP
from shiftcomp.quant import _pow2_unchecked

__all__ = [
    "ShiftResult", "acc_shift", "accumulator_bound", "shift_linear", "shift_conv2d", "shift_linear_float",
    "shift_conv2d_float", "exact", "int64_to_float32", "conv_output_size", "normalize_padding",
    "AdderResult", "adder_accumulator_bound", "adder_acc_dtype", "adder_linear", "adder_conv2d",
    "adder_linear_float", "adder_conv2d_float", "adder_float_error_bound", "conv_taps",
]

_FLOAT64_EXACT = 2 ** 53
_INT64_LIMIT = 2 ** 63


@dataclass
class ShiftResult:
    """Result of the exact reference.

    Attributes:
        acc: ``int64`` exact accumulator ``Σ sign * (x_q << (shift - s0))`` (output shape).
        s0: the accumulator shift (an int): min shift over nonzero-sign weights, 0 if none.
        out: ``float32`` output ``float32(acc) * 2**(s0 - F)`` (``+ bias``), the layer's value.
    """

    acc: torch.Tensor
    s0: int
    out: torch.Tensor


# ---------------------------------------------------------------------------------------------- validation
def _int_tensor(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype (int8/16/32/64, uint8), got {t.dtype}")
    return t.to(torch.int64)


def _check_weights(shift: torch.Tensor, sign: torch.Tensor, ndim: int,
                   what: str) -> tuple[torch.Tensor, torch.Tensor]:
    shift = _int_tensor(shift, "shift")
    sign = _int_tensor(sign, "sign")
    if shift.shape != sign.shape:
        raise ValueError(f"{what}: shift {tuple(shift.shape)} and sign {tuple(sign.shape)} must have the same shape")
    if shift.dim() != ndim:
        raise ValueError(f"{what}: weights must be {ndim}-D, got shape {tuple(shift.shape)}")
    if sign.numel() and bool((sign.abs() > 1).any()):
        raise ValueError(f"{what}: sign must hold only -1, 0, +1")
    return shift, sign


def _check_bias(bias: torch.Tensor | None, n_out: int, what: str) -> torch.Tensor | None:
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"{what}: bias must be a tensor or None, got {type(bias).__name__}")
    if bias.shape != (n_out,):
        raise ValueError(f"{what}: bias must have shape ({n_out},), got {tuple(bias.shape)}")
    return bias.detach().to(torch.float32)


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        t = (v, v)
    else:
        t = tuple(int(a) for a in v)
        if len(t) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    if name != "padding" and min(t) < 1:
        raise ValueError(f"{name} must be >= 1, got {v!r}")
    return t  # type: ignore[return-value]


def normalize_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Padding as ``(top, left, bottom, right)`` from an int, ``(ph, pw)`` or ``(top, left, bottom, right)``."""
    if isinstance(padding, str):
        raise ValueError(f"padding {padding!r}: resolve 'same'/'valid' first (Conv2dShift.explicit_padding)")
    if isinstance(padding, int):
        p = (padding,) * 4
    else:
        t = tuple(int(a) for a in padding)
        if len(t) == 2:
            p = (t[0], t[1], t[0], t[1])
        elif len(t) == 4:
            p = t
        else:
            raise ValueError(f"padding must be an int, (ph, pw) or (top, left, bottom, right), got {padding!r}")
    if min(p) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return p  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                     dilation: int) -> int:
    """Output length of a 1-D convolution (PyTorch's formula): ``(size + pads - d*(k-1) - 1) // s + 1``."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


# ---------------------------------------------------------------------------------------------- bounds
def acc_shift(shift: torch.Tensor, sign: torch.Tensor) -> int:
    """The accumulator shift ``s0``: min of ``shift`` over entries with ``sign != 0`` (0 if none). Python int."""
    shift = _int_tensor(shift, "shift")
    sign = _int_tensor(sign, "sign")
    used = sign != 0
    if shift.numel() == 0 or not bool(used.any()):
        return 0
    return int(torch.where(used, shift, torch.full_like(shift, torch.iinfo(torch.int64).max)).min())


def accumulator_bound(shift: torch.Tensor, sign: torch.Tensor, x_absmax: int, s0: int) -> int:
    """Proven bound on ``|acc|``: ``max_o Σ_k |sign[o,k]| * 2**(shift[o,k] - s0) * x_absmax`` (exact Python int).

    Args:
        shift, sign: integer weights; dim 0 is the output (channel), the rest is reduced over.
        x_absmax: bound on ``|x_q|`` (a non-negative int, e.g. ``2**(I+F-1)``).
        s0: accumulator shift; must be ``<=`` every used shift.

    Returns:
        The bound (0 for no weights or ``x_absmax == 0``).
    """
    shift = _int_tensor(shift, "shift")
    sign = _int_tensor(sign, "sign")
    x_absmax = int(x_absmax)
    if x_absmax < 0:
        raise ValueError(f"x_absmax must be >= 0, got {x_absmax}")
    if shift.numel() == 0 or x_absmax == 0:
        return 0
    n_rows = shift.shape[0]
    used = (sign != 0).reshape(n_rows, -1)
    if not bool(used.any()):
        return 0
    e = shift.reshape(n_rows, -1) - int(s0)
    e_min = int(torch.where(used, e, torch.full_like(e, torch.iinfo(torch.int64).max)).min())
    e_max = int(torch.where(used, e, torch.full_like(e, -1)).max())
    if e_min < 0:
        raise ValueError(f"s0={s0} is above a used shift ({e_min + int(s0)})")
    k = e.shape[1]
    if e_max + k.bit_length() < 62:                       # every row sum fits int64: compute it directly
        row_sums = torch.where(used, torch.ones_like(e) << e, torch.zeros_like(e)).sum(dim=1)
        return int(row_sums.max()) * x_absmax
    # counts[o, d] = number of used weights of row o with shift - s0 == d (one bincount), then exact ints
    if e_max < 1 << 16:
        n_bins = e_max + 1
        slot = e + (torch.arange(n_rows, device=e.device) * n_bins).unsqueeze(1)
        slot = torch.where(used, slot, torch.full_like(slot, n_rows * n_bins))
        counts = torch.bincount(slot.flatten(), minlength=n_rows * n_bins + 1)[:-1].view(n_rows, n_bins)
        cols = torch.nonzero(counts.sum(dim=0)).flatten()
        counts, vals = counts[:, cols], cols.tolist()
    else:                                                   # absurd shifts: sort the distinct ones
        values = torch.unique(e[used])
        row = torch.arange(n_rows, device=e.device).unsqueeze(1).expand_as(e)[used]
        slot = row * values.numel() + torch.searchsorted(values, e[used])
        counts = torch.bincount(slot, minlength=n_rows * values.numel()).view(n_rows, -1)
        vals = values.tolist()
    best = max(sum(c << d for c, d in zip(r, vals)) for r in counts.tolist())
    return best * x_absmax


def _scale(s0: int, frac_bits: int, device: torch.device) -> torch.Tensor:
    e = s0 - int(frac_bits)
    if e < MIN_SCALE_EXP or e > 127:
        raise ValueError(f"output scale 2**(s0 - F) = 2**{e} is not a float32 (s0={s0}, F={frac_bits}); "
                         f"narrow the shift range or use fewer fraction bits")
    return torch.tensor(2.0 ** e, dtype=torch.float32, device=device)


def int64_to_float32(acc: torch.Tensor) -> torch.Tensor:
    """Correctly rounded (nearest even, single rounding) int64 -> float32 on every backend.

    ``|acc| < 2**53`` converts directly (exact through float64 too); larger values are first rounded to odd
    at 53 bits, which makes the final float64 -> float32 step a single correct rounding.
    """
    if acc.numel() == 0 or int(acc.abs().max()) < _FLOAT64_EXACT:
        return acc.to(torch.float32)
    neg = acc < 0
    a = acc.abs()                                           # |acc| < 2**63 (callers' bound)
    _, ex = torch.frexp(a.to(torch.float64))                # ~bit length (may be 1 too high: harmless)
    drop = (ex.to(torch.int64) - 53).clamp(min=0)
    kept = a >> drop
    low = a - (kept << drop)
    kept = kept | (low != 0).to(torch.int64)               # sticky bit: round to odd
    mag = (kept.to(torch.float64) * _pow2_unchecked(drop, torch.float64)).to(torch.float32)
    return torch.where(neg, -mag, mag)


def _finish(acc: torch.Tensor, s0: int, frac_bits: int, bias: torch.Tensor | None,
            channel_dim: int) -> ShiftResult:
    out = int64_to_float32(acc) * _scale(s0, frac_bits, acc.device)
    if bias is not None:
        shape = [1] * acc.dim()
        shape[channel_dim] = -1
        out = out + bias.to(acc.device).view(shape)
    return ShiftResult(acc=acc, s0=s0, out=out)


def _choose(method: str, bound: int, what: str) -> str:
    if method not in ("auto", "float64", "int64"):
        raise ValueError(f"method must be 'auto', 'float64' or 'int64', got {method!r}")
    if bound >= _INT64_LIMIT:
        raise ValueError(
            f"{what}: the exact accumulator bound {bound} (~2**{bound.bit_length() - 1}) is >= 2**63, so it "
            f"fits no int64; use a narrower activation format (fewer I+F bits) or a narrower shift range")
    if method == "auto":
        return "float64" if bound < _FLOAT64_EXACT else "int64"
    if method == "float64" and bound >= _FLOAT64_EXACT:
        raise ValueError(f"{what}: method='float64' is not exact for accumulator bound {bound} >= 2**53")
    return method


def _int_weights(shift: torch.Tensor, sign: torch.Tensor, s0: int, dtype: torch.dtype) -> torch.Tensor:
    """``sign * 2**(shift - s0)`` in ``dtype`` (entries with sign 0 are 0)."""
    e = torch.where(sign != 0, shift - s0, torch.zeros_like(shift))
    if dtype == torch.int64:
        return sign * (torch.ones_like(e) << e)
    return sign.to(dtype) * _pow2_unchecked(e, dtype)


@contextlib.contextmanager
def _no_cudnn(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with torch.backends.cudnn.flags(enabled=False):
            yield
    else:
        yield


# ---------------------------------------------------------------------------------------------- linear
def shift_linear(x_q: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor, frac_bits: int,
                 bias: torch.Tensor | None = None, *, method: str = "auto") -> ShiftResult:
    """Exact shift dense layer: ``acc[..., n] = Σ_k sign[n,k] * (x_q[..., k] << (shift[n,k] - s0))``.

    Args:
        x_q: fixed-point activations, any integer dtype, shape ``(..., K)``.
        shift, sign: integer weights ``(N, K)``, sign in {-1, 0, +1}.
        frac_bits: ``F`` of the activation format (the output is scaled by ``2**(s0 - F)``).
        bias: float bias ``(N,)`` (cast to float32) or None.
        method: ``"auto"`` | ``"float64"`` | ``"int64"`` (how ``acc`` is computed; all exact when allowed).

    Returns:
        :class:`ShiftResult` with ``acc`` int64 ``(..., N)``, ``s0``, ``out`` float32 ``(..., N)``.

    Raises:
        ValueError: bad shapes/values, or an accumulator bound ``>= 2**63``.
    """
    what = "shift_linear"
    x_q = _int_tensor(x_q, "x_q")
    shift, sign = _check_weights(shift, sign, 2, what)
    n_out, k = shift.shape
    if x_q.dim() < 1 or x_q.shape[-1] != k:
        raise ValueError(f"{what}: x_q must have shape (..., {k}), got {tuple(x_q.shape)}")
    bias = _check_bias(bias, n_out, what)
    shift, sign = shift.to(x_q.device), sign.to(x_q.device)
    s0 = acc_shift(shift, sign)
    x_absmax = int(x_q.abs().max()) if x_q.numel() else 0
    path = _choose(method, accumulator_bound(shift, sign, x_absmax, s0), what)
    if path == "float64":
        acc = F.linear(x_q.to(torch.float64), _int_weights(shift, sign, s0, torch.float64)).to(torch.int64)
    else:
        w = _int_weights(shift, sign, s0, torch.int64).cpu()
        acc = torch.matmul(x_q.cpu(), w.t()).to(x_q.device)
    return _finish(acc, s0, frac_bits, bias, channel_dim=-1)


# ---------------------------------------------------------------------------------------------- conv2d
def _conv_args(x: torch.Tensor, shift: torch.Tensor, stride, padding, dilation, groups: int,
               what: str):
    if x.dim() not in (3, 4):
        raise ValueError(f"{what}: input must be (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    groups = int(groups)
    if groups < 1:
        raise ValueError(f"{what}: groups must be >= 1, got {groups}")
    o, cg, kh, kw = shift.shape
    c = x.shape[-3]
    if c != cg * groups:
        raise ValueError(f"{what}: input has {c} channels but weights {tuple(shift.shape)} with groups={groups} "
                         f"expect {cg * groups}")
    if o % groups:
        raise ValueError(f"{what}: {o} output channels are not divisible by groups={groups}")
    st = _pair(stride, "stride")
    dl = _pair(dilation, "dilation")
    pad = normalize_padding(padding)
    oh = conv_output_size(x.shape[-2], kh, st[0], pad[0], pad[2], dl[0])
    ow = conv_output_size(x.shape[-1], kw, st[1], pad[1], pad[3], dl[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input {tuple(x.shape)} with kernel {(kh, kw)}, padding {pad}, dilation {dl} "
                         f"gives an empty output ({oh}x{ow})")
    return st, pad, dl, groups, oh, ow


def _conv_int64(x: torch.Tensor, w: torch.Tensor, st, pad, dl, groups: int, oh: int, ow: int) -> torch.Tensor:
    """Exact int64 conv by im2col + int64 matmul (CPU). x (N, C, H, W), w (O, C/g, KH, KW), both int64."""
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    xp = F.pad(x, (pad[1], pad[3], pad[0], pad[2]))
    cols = []
    for i in range(kh):
        for j in range(kw):
            h0, w0 = i * dl[0], j * dl[1]
            cols.append(xp[:, :, h0:h0 + (oh - 1) * st[0] + 1:st[0], w0:w0 + (ow - 1) * st[1] + 1:st[1]])
    col = torch.stack(cols, dim=2)                                     # (N, C, KH*KW, OH, OW)
    col = col.reshape(n, groups, cg * kh * kw, oh * ow)                # c-major, then kh, kw: = weight order
    wm = w.reshape(groups, o // groups, cg * kh * kw)
    acc = torch.matmul(wm.unsqueeze(0), col)                           # (N, G, O/G, OH*OW)
    return acc.reshape(n, o, oh, ow)


def shift_conv2d(x_q: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor, frac_bits: int,
                 bias: torch.Tensor | None = None, stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1, *,
                 method: str = "auto") -> ShiftResult:
    """Exact shift 2-D convolution (cross-correlation, like ``F.conv2d``), zero padding.

    Args:
        x_q: fixed-point activations, any integer dtype, ``(N, C, H, W)`` (or unbatched ``(C, H, W)``).
        shift, sign: integer weights ``(O, C // groups, KH, KW)``, sign in {-1, 0, +1}.
        frac_bits: ``F`` of the activation format.
        bias: float bias ``(O,)`` (cast to float32) or None.
        stride, dilation: int or ``(sh, sw)``, ``>= 1``.
        padding: int, ``(ph, pw)`` or ``(top, left, bottom, right)`` zeros, ``>= 0``.
        groups: ``C`` and ``O`` divisible by it (``groups == C``: depthwise).
        method: ``"auto"`` | ``"float64"`` | ``"int64"``.

    Returns:
        :class:`ShiftResult`, ``acc`` int64 and ``out`` float32 of shape ``(N, O, OH, OW)`` (``(O, OH, OW)``
        for an unbatched input).
    """
    what = "shift_conv2d"
    x_q = _int_tensor(x_q, "x_q")
    shift, sign = _check_weights(shift, sign, 4, what)
    st, pad, dl, groups, oh, ow = _conv_args(x_q, shift, stride, padding, dilation, groups, what)
    bias = _check_bias(bias, shift.shape[0], what)
    unbatched = x_q.dim() == 3
    if unbatched:
        x_q = x_q.unsqueeze(0)
    shift, sign = shift.to(x_q.device), sign.to(x_q.device)
    s0 = acc_shift(shift, sign)
    x_absmax = int(x_q.abs().max()) if x_q.numel() else 0
    path = _choose(method, accumulator_bound(shift, sign, x_absmax, s0), what)
    if path == "float64":
        xd = F.pad(x_q.to(torch.float64), (pad[1], pad[3], pad[0], pad[2]))
        with _no_cudnn(x_q.device):
            accf = F.conv2d(xd, _int_weights(shift, sign, s0, torch.float64), None, st, 0, dl, groups)
        acc = accf.to(torch.int64)
    else:
        w = _int_weights(shift, sign, s0, torch.int64).cpu()
        acc = _conv_int64(x_q.cpu(), w, st, pad, dl, groups, oh, ow).to(x_q.device)
    if unbatched:
        acc = acc.squeeze(0)
    return _finish(acc, s0, frac_bits, bias, channel_dim=-3)


# ---------------------------------------------------------------------------------------------- float mode
def _float_weights(shift: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    e = torch.where(sign != 0, shift, torch.zeros_like(shift))
    return sign.to(torch.float64) * _pow2_unchecked(e, torch.float64)


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None, channel_dim: int) -> torch.Tensor:
    if bias is None:
        return y
    shape = [1] * y.dim()
    shape[channel_dim] = -1
    return y + bias.to(y.device).view(shape)


def shift_linear_float(x: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """Float-activation shift dense layer reference: ``float32(Σ_k x[..., k] * sign * 2**shift)`` ``+ bias``.

    Args:
        x: float activations ``(..., K)`` (any float dtype; used at full precision, in float64).
        shift, sign: integer weights ``(N, K)``; bias: ``(N,)`` (cast to float32) or None.

    Returns:
        float32 ``(..., N)``: the float64 dot product rounded once to float32, then the float32 bias add.
    """
    what = "shift_linear_float"
    if not x.is_floating_point():
        raise TypeError(f"{what}: x must be a float tensor, got {x.dtype}")
    shift, sign = _check_weights(shift, sign, 2, what)
    if x.dim() < 1 or x.shape[-1] != shift.shape[1]:
        raise ValueError(f"{what}: x must have shape (..., {shift.shape[1]}), got {tuple(x.shape)}")
    bias = _check_bias(bias, shift.shape[0], what)
    w = _float_weights(shift.to(x.device), sign.to(x.device))
    y = F.linear(x.detach().to(torch.float64), w).to(torch.float32)
    return _add_bias(y, bias, -1)


def shift_conv2d_float(x: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor,
                       bias: torch.Tensor | None = None, stride: int | Sequence[int] = 1,
                       padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                       groups: int = 1) -> torch.Tensor:
    """Float-activation shift conv2d reference (float64 compute, one rounding to float32, then ``+ bias``).

    Arguments as :func:`shift_conv2d`, with float activations ``x`` ``(N, C, H, W)`` or ``(C, H, W)``.
    Returns float32 ``(N, O, OH, OW)``.
    """
    what = "shift_conv2d_float"
    if not x.is_floating_point():
        raise TypeError(f"{what}: x must be a float tensor, got {x.dtype}")
    shift, sign = _check_weights(shift, sign, 4, what)
    st, pad, dl, groups, _, _ = _conv_args(x, shift, stride, padding, dilation, groups, what)
    bias = _check_bias(bias, shift.shape[0], what)
    w = _float_weights(shift.to(x.device), sign.to(x.device))
    xd = F.pad(x.detach().to(torch.float64), (pad[1], pad[3], pad[0], pad[2]))
    with _no_cudnn(x.device):
        y = F.conv2d(xd, w, None, st, 0, dl, groups).to(torch.float32)
    return _add_bias(y, bias, -3)


# ---------------------------------------------------------------------------------------------- exact mode
class ExactSwitch:
    """Mixin of layers that compute through this reference when ``.exact`` is set (``shiftcomp.nn.ShiftLayer``)."""

    exact: bool = False


@contextlib.contextmanager
def exact(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Context manager: inside it every shift and adder layer of ``model`` has ``.exact = True``.

    The layers then compute through this reference when in eval mode (``model.eval()``; training-mode
    forwards are unaffected). The previous ``.exact`` values are restored on exit. Yields ``model``.
    """
    layers = [m for m in model.modules() if isinstance(m, ExactSwitch)]
    saved = [m.exact for m in layers]
    try:
        for m in layers:
            m.exact = True
        yield model
    finally:
        for m, v in zip(layers, saved):
            m.exact = v


# ---------------------------------------------------------------------------------------------- adder layers
# The exact integer reference of adder layers (AdderNet): the oracle compiled adder kernels must equal.
# 
# For one output element with fixed-point inputs ``x_q[k]`` (a zero-padded position is ``x_q = 0``) and
# fixed-point weights ``w_q[o,k]`` sharing the activations' ``F`` fraction bits::
# 
#     acc = -Σ_k |x_q[k] - w_q[o,k]|             exact integer
#     out = fl32(fl32(acc) * 2**-F)  [+ bias, a float32 add]
# 
# ``fl32(acc)`` is one rounding to nearest even (exact while ``|acc| < 2**24``); the multiply by ``2**-F``
# is exact unless the result is subnormal. Padding is part of the sum: a padded position contributes
# ``-|w_q|``.
# 
# Accumulator width (:func:`adder_accumulator_bound`): ``|acc| <= max_o Σ_k (max|x_q| + |w_q[o,k]|)``.
# A kernel accumulates in ``int32`` when that bound is below ``2**31``, in ``int64`` when below ``2**63``;
# beyond that no kernel can be exact and both this reference and the compiler refuse.
# 
# How ``acc`` is computed here: ``torch.cdist(p=1)`` in float64 (exact while the bound is below ``2**53``,
# every partial sum being an integer below it), else int64 broadcasting in chunks.
# 
# Float mode: :func:`adder_linear_float` / :func:`adder_conv2d_float` compute ``-Σ|x - w|`` in float64 and
# round once to float32; float32 kernels are compared with it within :func:`adder_float_error_bound`.


_INT32_LIMIT = 2 ** 31
_CHUNK_ELEMS = 1 << 22          # int64 path: elements of one broadcast |x - w| block


@dataclass
class AdderResult:
    """Result of the exact adder reference.

    Attributes:
        acc: ``int64`` exact accumulator ``-Σ|x_q - w_q|`` (output shape).
        acc_dtype: ``"int32"`` or ``"int64"``: the accumulator a kernel needs, from the proven bound.
        out: ``float32`` output ``fl32(fl32(acc) * 2**-F)`` (``+ bias``).
    """

    acc: torch.Tensor
    acc_dtype: str
    out: torch.Tensor


def adder_accumulator_bound(w_q: torch.Tensor, x_absmax: int) -> int:
    """Proven bound on ``|acc|``: ``max_o Σ_k (x_absmax + |w_q[o,k]|)`` (exact Python int).

    Args:
        w_q: integer weights, dim 0 is the output; the rest is reduced over (padding is covered, since a
            padded term ``|0 - w|`` is below ``x_absmax + |w|``).
        x_absmax: bound on ``|x_q|`` (``>= 0``).
    """
    w_q = _int_tensor(w_q, "w_q")
    x_absmax = int(x_absmax)
    if x_absmax < 0:
        raise ValueError(f"x_absmax must be >= 0, got {x_absmax}")
    if w_q.numel() == 0:
        return 0
    rows = w_q.reshape(w_q.shape[0], -1)
    k = rows.shape[1]
    if k == 0:
        return 0
    if int(rows.abs().max()) * k < 2 ** 62:                     # the int64 row sums cannot wrap
        wsum = int(rows.abs().sum(dim=1).max())
    else:                                                        # exact Python integers
        wsum = max(sum(abs(v) for v in r) for r in rows.tolist())
    return wsum + k * x_absmax


def adder_acc_dtype(bound: int, what: str = "adder layer") -> str:
    """``"int32"`` if ``bound < 2**31``, ``"int64"`` if ``bound < 2**63``, else ``ValueError`` naming ``what``."""
    if bound < _INT32_LIMIT:
        return "int32"
    if bound < _INT64_LIMIT:
        return "int64"
    raise ValueError(f"{what}: the adder accumulator bound {bound} (~2**{bound.bit_length() - 1}) is >= 2**63, "
                     f"so no int64 accumulator is exact; use narrower activation/weight formats")


def _adder_finish(acc: torch.Tensor, acc_dtype: str, frac_bits: int, bias: torch.Tensor | None,
            channel_dim: int) -> AdderResult:
    f = int(frac_bits)
    if f < 0:
        raise ValueError(f"frac_bits must be >= 0, got {f}")
    out = int64_to_float32(acc) * torch.tensor(2.0 ** -f, dtype=torch.float32, device=acc.device)
    if bias is not None:
        shape = [1] * acc.dim()
        shape[channel_dim] = -1
        out = out + bias.detach().to(device=acc.device, dtype=torch.float32).view(shape)
    return AdderResult(acc=acc, acc_dtype=acc_dtype, out=out)


def _adder_check_bias(bias: torch.Tensor | None, n_out: int, what: str) -> torch.Tensor | None:
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor) or bias.shape != (n_out,):
        raise ValueError(f"{what}: bias must be a tensor of shape ({n_out},), got "
                         f"{getattr(bias, 'shape', type(bias).__name__)}")
    return bias.detach().to(torch.float32)


def _sad_rows(x: torch.Tensor, w: torch.Tensor, exact_f64: bool) -> torch.Tensor:
    """``Σ_c |x[..., r, c] - w[..., o, c]|`` -> ``(..., R, O)``; ``x``/``w`` share leading batch dims."""
    if exact_f64:
        if x.shape[-1] == 0:
            return torch.zeros(x.shape[:-1] + (w.shape[-2],), dtype=torch.float64, device=x.device)
        return torch.cdist(x.to(torch.float64), w.to(torch.float64), p=1.0)
    out = torch.empty(x.shape[:-1] + (w.shape[-2],), dtype=torch.int64, device=x.device)
    rows = max(1, _CHUNK_ELEMS // max(1, w.shape[-2] * w.shape[-1]))
    for r0 in range(0, x.shape[-2], rows):
        xs = x[..., r0:r0 + rows, :].unsqueeze(-2)                   # (..., r, 1, C)
        out[..., r0:r0 + rows, :] = (xs - w.unsqueeze(-3)).abs().sum(dim=-1)
    return out


def adder_linear(x_q: torch.Tensor, w_q: torch.Tensor, frac_bits: int,
                 bias: torch.Tensor | None = None) -> AdderResult:
    """Exact adder dense layer: ``acc[..., o] = -Σ_k |x_q[..., k] - w_q[o, k]|``.

    Args:
        x_q: fixed-point activations, integer dtype, ``(..., K)``.
        w_q: fixed-point weights, integer dtype, ``(O, K)``, with the same ``F`` fraction bits.
        frac_bits: ``F``.
        bias: float bias ``(O,)`` or ``None``.

    Returns:
        :class:`AdderResult` (``acc`` int64 and ``out`` float32 of shape ``(..., O)``).

    Raises:
        ValueError: bad shapes, or an accumulator bound ``>= 2**63``.
    """
    what = "adder_linear"
    x_q, w_q = _int_tensor(x_q, "x_q"), _int_tensor(w_q, "w_q")
    if w_q.dim() != 2 or x_q.dim() < 1 or x_q.shape[-1] != w_q.shape[1]:
        raise ValueError(f"{what}: need x_q (..., K) and w_q (O, K), got {tuple(x_q.shape)} and {tuple(w_q.shape)}")
    bias = _adder_check_bias(bias, w_q.shape[0], what)
    w_q = w_q.to(x_q.device)
    bound = adder_accumulator_bound(w_q, int(x_q.abs().max()) if x_q.numel() else 0)
    acc_dtype = adder_acc_dtype(bound, what)
    lead = x_q.shape[:-1]
    x2 = x_q.reshape(-1, x_q.shape[-1])
    acc = -_sad_rows(x2, w_q, bound < _FLOAT64_EXACT).to(torch.int64)
    return _adder_finish(acc.reshape(lead + (w_q.shape[0],)), acc_dtype, frac_bits, bias, channel_dim=-1)


def conv_taps(xp: torch.Tensor, kh: int, kw: int, st: tuple[int, int], dl: tuple[int, int], oh: int,
              ow: int):
    """Yield ``(i, j, view)`` for every kernel tap: ``view = xp[:, :, i*dh :: sh, j*dw :: sw]`` cropped to
    ``(N, C, oh, ow)`` -- the input each output pixel meets at tap ``(i, j)`` of the padded input ``xp``."""
    for i in range(kh):
        for j in range(kw):
            h0, w0 = i * dl[0], j * dl[1]
            yield i, j, xp[:, :, h0:h0 + (oh - 1) * st[0] + 1:st[0], w0:w0 + (ow - 1) * st[1] + 1:st[1]]


def _adder_conv_acc(xp: torch.Tensor, w: torch.Tensor, st, dl, groups: int, oh: int, ow: int,
                    exact_f64: bool) -> torch.Tensor:
    """``Σ |x - w|`` (not negated) of a padded input, tap by tap (no k²-times-larger unfold)."""
    n, c = xp.shape[:2]
    o, cg, kh, kw = w.shape
    og = o // groups
    acc = None
    for i, j, tap in conv_taps(xp, kh, kw, st, dl, oh, ow):
        rows = tap.reshape(n, groups, cg, oh * ow).permute(1, 0, 3, 2).reshape(groups, n * oh * ow, cg)
        wt = w[:, :, i, j].reshape(groups, og, cg)
        part = _sad_rows(rows, wt, exact_f64)                          # (G, N*P, O/G)
        acc = part if acc is None else acc + part
    return acc.reshape(groups, n, oh * ow, og).permute(1, 0, 3, 2).reshape(n, o, oh, ow)


def adder_conv2d(x_q: torch.Tensor, w_q: torch.Tensor, frac_bits: int, bias: torch.Tensor | None = None,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1) -> AdderResult:
    """Exact adder 2-D convolution (cross-correlation layout of ``F.conv2d``) with zero padding.

    Args:
        x_q: fixed-point activations, integer dtype, ``(N, C, H, W)`` or ``(C, H, W)``.
        w_q: fixed-point weights ``(O, C // groups, KH, KW)``, same ``F``.
        frac_bits: ``F``.
        bias: float bias ``(O,)`` or ``None``.
        stride, dilation: int or pair (``>= 1``); padding: int, ``(ph, pw)`` or ``(top, left, bottom, right)``.
        groups: ``C`` and ``O`` divisible by it.

    Returns:
        :class:`AdderResult` of shape ``(N, O, OH, OW)`` (``(O, OH, OW)`` unbatched). A padded position
        contributes ``-|w_q|``.
    """
    what = "adder_conv2d"
    x_q, w_q = _int_tensor(x_q, "x_q"), _int_tensor(w_q, "w_q")
    if w_q.dim() != 4:
        raise ValueError(f"{what}: weights must be 4-D (O, C/groups, KH, KW), got {tuple(w_q.shape)}")
    st, pad, dl, groups, oh, ow = _conv_args(x_q, w_q, stride, padding, dilation, groups, what)
    bias = _adder_check_bias(bias, w_q.shape[0], what)
    unbatched = x_q.dim() == 3
    if unbatched:
        x_q = x_q.unsqueeze(0)
    w_q = w_q.to(x_q.device)
    bound = adder_accumulator_bound(w_q, int(x_q.abs().max()) if x_q.numel() else 0)
    acc_dtype = adder_acc_dtype(bound, what)
    xp = F.pad(x_q, (pad[1], pad[3], pad[0], pad[2]))
    acc = -_adder_conv_acc(xp, w_q, st, dl, groups, oh, ow, bound < _FLOAT64_EXACT).to(torch.int64)
    if unbatched:
        acc = acc.squeeze(0)
    return _adder_finish(acc, acc_dtype, frac_bits, bias, channel_dim=-3)


# ---------------------------------------------------------------------------------------------- float mode
def adder_linear_float(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Float-mode adder dense reference: ``fl32(-Σ|x - w|)`` computed in float64, then ``+ bias`` in float32."""
    what = "adder_linear_float"
    if not x.is_floating_point() or not w.is_floating_point():
        raise TypeError(f"{what}: x and w must be float tensors")
    if w.dim() != 2 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"{what}: need x (..., K) and w (O, K), got {tuple(x.shape)} and {tuple(w.shape)}")
    bias = _adder_check_bias(bias, w.shape[0], what)
    x2 = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
    y = -_sad_rows(x2, w.detach().to(x.device, torch.float64), True)
    y = y.to(torch.float32).reshape(x.shape[:-1] + (w.shape[0],))
    return y if bias is None else y + bias.to(y.device)


def adder_conv2d_float(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                       stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                       dilation: int | Sequence[int] = 1, groups: int = 1) -> torch.Tensor:
    """Float-mode adder conv2d reference (float64 compute, one rounding to float32, then ``+ bias``)."""
    what = "adder_conv2d_float"
    if not x.is_floating_point() or not w.is_floating_point():
        raise TypeError(f"{what}: x and w must be float tensors")
    st, pad, dl, groups, oh, ow = _conv_args(x, w, stride, padding, dilation, groups, what)
    bias = _adder_check_bias(bias, w.shape[0], what)
    unbatched = x.dim() == 3
    xd = x.detach().to(torch.float64)
    if unbatched:
        xd = xd.unsqueeze(0)
    xp = F.pad(xd, (pad[1], pad[3], pad[0], pad[2]))
    with _no_cudnn(x.device):
        y = -_adder_conv_acc(xp, w.detach().to(x.device, torch.float64), st, dl, groups, oh, ow, True)
    y = y.to(torch.float32)
    if unbatched:
        y = y.squeeze(0)
    return y if bias is None else y + bias.to(y.device).view(-1, 1, 1)


def adder_float_error_bound(ref: torch.Tensor, k: int, abs_sum: torch.Tensor | float) -> torch.Tensor:
    """Allowed ``|y32 - ref|`` for a float32 kernel summing ``k`` terms ``|x - w|`` (recursive summation).

    ``γ_(k+1) * Σ|x - w| + ulp(ref)``: each difference, absolute value and addition rounds at most once
    per term (``γ_n = n u / (1 - n u)``, ``u = 2**-24``), plus the final rounding of the reference itself.
    ``abs_sum`` bounds ``Σ|x - w|`` per output (``-ref`` before bias serves).
    """
    u = 2.0 ** -24
    n = k + 1
    gamma = n * u / (1 - n * u)
    s = abs_sum if isinstance(abs_sum, torch.Tensor) else torch.tensor(float(abs_sum))
    return gamma * s.abs().to(torch.float64) + ref.abs().to(torch.float64) * 2 * u + 1e-30
