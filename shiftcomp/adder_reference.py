"""The exact integer reference of adder layers (AdderNet): the oracle compiled adder kernels must equal.

For one output element with fixed-point inputs ``x_q[k]`` (a zero-padded position is ``x_q = 0``) and
fixed-point weights ``w_q[o,k]`` sharing the activations' ``F`` fraction bits::

    acc = -Σ_k |x_q[k] - w_q[o,k]|             exact integer
    out = fl32(fl32(acc) * 2**-F)  [+ bias, a float32 add]

``fl32(acc)`` is one rounding to nearest even (exact while ``|acc| < 2**24``); the multiply by ``2**-F``
is exact unless the result is subnormal. Padding is part of the sum: a padded position contributes
``-|w_q|``.

Accumulator width (:func:`adder_accumulator_bound`): ``|acc| <= max_o Σ_k (max|x_q| + |w_q[o,k]|)``.
A kernel accumulates in ``int32`` when that bound is below ``2**31``, in ``int64`` when below ``2**63``;
beyond that no kernel can be exact and both this reference and the compiler refuse.

How ``acc`` is computed here: ``torch.cdist(p=1)`` in float64 (exact while the bound is below ``2**53``,
every partial sum being an integer below it), else int64 broadcasting in chunks.

Float mode: :func:`adder_linear_float` / :func:`adder_conv2d_float` compute ``-Σ|x - w|`` in float64 and
round once to float32; float32 kernels are compared with it within :func:`adder_float_error_bound`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from shiftcomp.reference import _conv_args, _int_tensor, _no_cudnn, int64_to_float32

__all__ = ["AdderResult", "adder_accumulator_bound", "adder_acc_dtype", "adder_linear", "adder_conv2d",
           "adder_linear_float", "adder_conv2d_float", "adder_float_error_bound", "conv_taps"]

_FLOAT64_EXACT = 2 ** 53
_INT32_LIMIT = 2 ** 31
_INT64_LIMIT = 2 ** 63
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


def _finish(acc: torch.Tensor, acc_dtype: str, frac_bits: int, bias: torch.Tensor | None,
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


def _check_bias(bias: torch.Tensor | None, n_out: int, what: str) -> torch.Tensor | None:
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
    bias = _check_bias(bias, w_q.shape[0], what)
    w_q = w_q.to(x_q.device)
    bound = adder_accumulator_bound(w_q, int(x_q.abs().max()) if x_q.numel() else 0)
    acc_dtype = adder_acc_dtype(bound, what)
    lead = x_q.shape[:-1]
    x2 = x_q.reshape(-1, x_q.shape[-1])
    acc = -_sad_rows(x2, w_q, bound < _FLOAT64_EXACT).to(torch.int64)
    return _finish(acc.reshape(lead + (w_q.shape[0],)), acc_dtype, frac_bits, bias, channel_dim=-1)


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
    bias = _check_bias(bias, w_q.shape[0], what)
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
    return _finish(acc, acc_dtype, frac_bits, bias, channel_dim=-3)


# ---------------------------------------------------------------------------------------------- float mode
def adder_linear_float(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Float-mode adder dense reference: ``fl32(-Σ|x - w|)`` computed in float64, then ``+ bias`` in float32."""
    what = "adder_linear_float"
    if not x.is_floating_point() or not w.is_floating_point():
        raise TypeError(f"{what}: x and w must be float tensors")
    if w.dim() != 2 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"{what}: need x (..., K) and w (O, K), got {tuple(x.shape)} and {tuple(w.shape)}")
    bias = _check_bias(bias, w.shape[0], what)
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
    bias = _check_bias(bias, w.shape[0], what)
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
