"""Adder layers (AdderNet, Chen et al. CVPR 2020): ``LinearAdder`` and ``Conv2dAdder``.

Per output element ``y[o] = -Σ_k |x[k] - w[o,k]| (+ bias[o])``; a zero-padded position is ``x = 0`` and
contributes ``-|w|``.

Training follows AdderNet:

* weight gradient: the full-precision ``∂y/∂w = x - w`` (not its sign ``sign(x - w)``);
* input gradient: ``∂y/∂x = HardTanh(w - x)`` (the true derivative ``sign(w - x)`` clipped smoothly);
* optional adaptive learning-rate scale per layer ``η * sqrt(k) / ‖∇w‖₂`` (``AdderConfig.adaptive_lr = η``):
  an identity autograd function on the weight rescales its gradient in the backward, so any torch
  optimizer applies it (:func:`adaptive_grad_scale` is the formula).

Fast training forward: the convolution is computed tap by tap (each of the ``KH * KW`` taps is one
``torch.cdist(p=1)`` of the shifted input against that tap's weights, accumulated), so memory stays at the
size of the input and output instead of an unfold ``KH * KW`` times larger; the backward recomputes the taps
from the saved input (the weight gradient of a tap is one matmul: ``Σ g (x - w) = gᵀx - w Σ g``).

Fixed point (``AdderConfig.act_bits = (I, F)``): activations are fake-quantised to ``Q(I, F)``, weights to
``b = weight_bits`` bits sharing the ``F`` fraction bits (``clamp(round(w * 2**F), -2**(b-1), 2**(b-1)-1)``,
straight-through gradient). With ``layer.exact = True`` in eval mode the forward is the exact integer
reference (:mod:`shiftcomp.reference`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from shiftcomp import reference as aref
from shiftcomp.adder_config import AdderConfig
from shiftcomp.conv_geometry import conv2d_geometry_repr, conv2d_init_kwargs
from shiftcomp.quant import fake_quant_act, to_fixed
from shiftcomp.reference import normalize_padding

_Device = Union[torch.device, str, int, None]

__all__ = ["AdderLayer", "LinearAdder", "Conv2dAdder", "adder_layers", "adder_weight_round",
           "adder_fake_weight", "adder_rows", "adder_conv2d_train", "adaptive_grad_scale"]

_BWD_CHUNK_ELEMS = 1 << 18      # elements of one (rows, out, in) HardTanh block in the input gradient


# ---------------------------------------------------------------------------------------------- weights
def adder_weight_round(w: torch.Tensor, frac_bits: int, lo: int, hi: int) -> torch.Tensor:
    """Fixed-point adder weights ``clamp(round(w * 2**F), lo, hi)`` as ``int64`` (round to nearest, ties even)."""
    if bool(torch.isnan(w).any()):
        raise ValueError("adder weights contain NaN")
    v = torch.round(w.detach().to(torch.float64) * (2.0 ** frac_bits))
    return v.clamp(lo, hi).to(torch.int64)


class _AdderFakeWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, frac_bits: int, lo: int, hi: int):  # type: ignore[override]
        q = torch.round(w.detach().to(torch.float64) * (2.0 ** frac_bits)).clamp(lo, hi)
        return (q * (2.0 ** -frac_bits)).to(w.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g, None, None, None


def adder_fake_weight(w: torch.Tensor, frac_bits: int, lo: int, hi: int) -> torch.Tensor:
    """Differentiable fixed-point weight ``adder_weight_round(w) * 2**-F`` (straight-through gradient)."""
    return _AdderFakeWeight.apply(w, int(frac_bits), int(lo), int(hi))


# ---------------------------------------------------------------------------------------------- autograd
def _sad(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ_c |x[g, r, c] - w[g, o, c]|`` -> ``(G, R, O)`` (float, ``torch.cdist(p=1)``)."""
    if x.shape[-1] == 0:
        return x.new_zeros(x.shape[:-1] + (w.shape[-2],))
    return torch.cdist(x, w, p=1.0)


def _grad_x_rows(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``Σ_o g[g, r, o] * HardTanh(w[g, o, c] - x[g, r, c])`` -> ``(G, R, C)``, in row chunks."""
    out = torch.empty_like(x)
    rows = max(1, _BWD_CHUNK_ELEMS // max(1, w.shape[0] * w.shape[1] * w.shape[2]))
    for r0 in range(0, x.shape[1], rows):
        xs = x[:, r0:r0 + rows]
        d = (w.unsqueeze(1) - xs.unsqueeze(2)).clamp_(-1.0, 1.0)           # (G, r, O, C)
        out[:, r0:r0 + rows] = torch.einsum("gro,groc->grc", g[:, r0:r0 + rows], d)
    return out


def _grad_w_rows(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``Σ_r g[g, r, o] * (x[g, r, c] - w[g, o, c])`` = ``gᵀx - w Σ_r g`` -> ``(G, O, C)``."""
    return torch.bmm(g.transpose(1, 2), x) - w * g.sum(dim=1).unsqueeze(-1)


class _AdderRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return -_sad(x, w)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, w = ctx.saved_tensors
        gx = _grad_x_rows(x, w, g) if ctx.needs_input_grad[0] else None
        gw = _grad_w_rows(x, w, g) if ctx.needs_input_grad[1] else None
        return gx, gw


def adder_rows(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``y[g, r, o] = -Σ_c |x[g, r, c] - w[g, o, c]|`` with AdderNet's gradients (module docstring).

    ``x``: ``(G, R, C)``, ``w``: ``(G, O, C)`` float tensors of one dtype.
    """
    return _AdderRows.apply(x, w)


def _taps(xp_nhwc: torch.Tensor, kh: int, kw: int, st, dl, oh: int, ow: int):
    for i in range(kh):
        for j in range(kw):
            h0, w0 = i * dl[0], j * dl[1]
            yield i, j, (slice(h0, h0 + (oh - 1) * st[0] + 1, st[0]), slice(w0, w0 + (ow - 1) * st[1] + 1, st[1]))


def _tap_rows(xp_nhwc: torch.Tensor, hs: slice, ws: slice, groups: int) -> torch.Tensor:
    n, _, _, c = xp_nhwc.shape
    t = xp_nhwc[:, hs, ws, :]                                              # (N, oh, ow, C)
    r = t.shape[0] * t.shape[1] * t.shape[2]
    return t.reshape(r, groups, c // groups).transpose(0, 1).contiguous()  # (G, R, C/G)


class _AdderConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, st, pad, dl, groups: int, oh: int, ow: int):  # type: ignore[override]
        n = x.shape[0]
        o, cg, kh, kw = w.shape
        xp = F.pad(x, (pad[1], pad[3], pad[0], pad[2])).permute(0, 2, 3, 1).contiguous()
        acc = None
        for i, j, (hs, ws) in _taps(xp, kh, kw, st, dl, oh, ow):
            part = _sad(_tap_rows(xp, hs, ws, groups), w[:, :, i, j].reshape(groups, o // groups, cg))
            acc = part if acc is None else acc.add_(part)
        ctx.save_for_backward(x, w)
        ctx.geo = (st, pad, dl, groups, oh, ow)
        y = acc.neg_().reshape(groups, n, oh, ow, o // groups)
        return y.permute(1, 0, 4, 2, 3).reshape(n, o, oh, ow)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, w = ctx.saved_tensors
        st, pad, dl, groups, oh, ow = ctx.geo
        n, c, h, wd = x.shape
        o, cg, kh, kw = w.shape
        og = o // groups
        xp = F.pad(x, (pad[1], pad[3], pad[0], pad[2])).permute(0, 2, 3, 1).contiguous()
        gr = g.reshape(n, groups, og, oh, ow).permute(1, 0, 3, 4, 2).reshape(groups, n * oh * ow, og).contiguous()
        gxp = torch.zeros_like(xp) if ctx.needs_input_grad[0] else None
        gw = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        for i, j, (hs, ws) in _taps(xp, kh, kw, st, dl, oh, ow):
            rows = _tap_rows(xp, hs, ws, groups)
            wt = w[:, :, i, j].reshape(groups, og, cg)
            if gw is not None:
                gw[:, :, i, j] = _grad_w_rows(rows, wt, gr).reshape(o, cg)
            if gxp is not None:
                gx = _grad_x_rows(rows, wt, gr)                              # (G, R, C/G)
                gxp[:, hs, ws, :] += gx.transpose(0, 1).reshape(n, oh, ow, c)
        gx_out = None
        if gxp is not None:
            gx_out = gxp.permute(0, 3, 1, 2)[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd].contiguous()
        return gx_out, gw, None, None, None, None, None, None


def adder_conv2d_train(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, dilation=1,
                       groups: int = 1) -> torch.Tensor:
    """Differentiable float adder convolution ``-Σ|x - w|`` (``F.conv2d`` layout, zero padding, no bias).

    Tap by tap (no unfold); AdderNet's gradients (module docstring). ``padding`` as
    :func:`shiftcomp.reference.normalize_padding`.
    """
    from shiftcomp.reference import _conv_args

    st, pad, dl, groups, oh, ow = _conv_args(x, w, stride, padding, dilation, groups, "adder_conv2d_train")
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    y = _AdderConv2d.apply(x, w, st, pad, dl, groups, oh, ow)
    return y.squeeze(0) if unbatched else y


def adaptive_grad_scale(grad: torch.Tensor, eta: float) -> torch.Tensor:
    """AdderNet's adaptive learning-rate scale: ``η * sqrt(k) * grad / ‖grad‖₂`` (``k = grad.numel()``)."""
    norm = grad.norm(p=2).clamp(min=1e-12)
    return grad * (eta * math.sqrt(grad.numel()) / norm)


class _AdaptiveScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, eta: float):  # type: ignore[override]
        ctx.eta = eta
        return w.view_as(w)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return adaptive_grad_scale(g, ctx.eta), None


# ---------------------------------------------------------------------------------------------- layers
class AdderLayer(aref.ExactSwitch, nn.Module):
    """Base class of :class:`LinearAdder` and :class:`Conv2dAdder`.

    Attributes:
        config: the layer's :class:`AdderConfig` (a private copy).
        exact: when True and in eval mode, the forward runs the exact reference.
        weight: float weight (``nn.Linear``/``nn.Conv2d`` shape); bias: float or ``None``.
    """

    config: AdderConfig
    exact: bool

    def _init_params(self, shape: tuple[int, ...], bias: bool, config: AdderConfig | None, device: _Device,
                     dtype: torch.dtype | None) -> None:
        if config is None:
            config = AdderConfig()
        if not isinstance(config, AdderConfig):
            raise TypeError(f"config must be an AdderConfig, got {type(config).__name__}")
        self.config = dataclasses.replace(config)
        self.exact = False
        fk = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(shape, **fk))
        if bias:
            self.bias = nn.Parameter(torch.empty(shape[0], **fk))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        """Inputs per output."""
        return int(math.prod(self.weight.shape[1:]))

    def reset_parameters(self) -> None:
        """AdderNet initialisation: Kaiming-normal weight (``nn.init.normal_`` with std ``sqrt(2/fan_in)``),
        zero bias."""
        with torch.no_grad():
            nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / max(1, self.fan_in)))
            if self.bias is not None:
                self.bias.zero_()

    def set_adaptive_lr(self, eta: float | None) -> None:
        """Turn AdderNet's adaptive weight-gradient scale on (``eta``) or off (``None``) for this layer."""
        self.config.adaptive_lr = eta
        self.config.validate()

    def integer_weights(self) -> torch.Tensor:
        """Fixed-point weights ``w_q`` (``int64``, weight shape). Needs ``config.act_bits``."""
        if self.config.act_bits is None:
            raise ValueError("integer_weights needs fixed-point activations (config.act_bits)")
        lo, hi = self.config.weight_int_range
        return adder_weight_round(self.weight, self.config.act_bits[1], lo, hi)

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward uses: fake-quantised (fixed point) or the float weight itself."""
        w = self.weight
        if self.config.adaptive_lr is not None:
            w = _AdaptiveScale.apply(w, self.config.adaptive_lr)
        if self.config.act_bits is None:
            return w
        lo, hi = self.config.weight_int_range
        return adder_fake_weight(w, self.config.act_bits[1], lo, hi)

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _reference(self, x_q: torch.Tensor, w_q: torch.Tensor, frac_bits: int) -> aref.AdderResult:
        raise NotImplementedError

    def _reference_float(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quant float forward with AdderNet's gradients, or the exact reference when ``exact`` in eval."""
        if self.exact and not self.training:
            return self.exact_forward(x)
        act = self.config.act_bits
        if act is not None:
            x = fake_quant_act(x, act[0], act[1], self.config.rounding, self.config.act_grad)
        y = self._op(x, self.quantized_weight().to(x.dtype))
        return y

    def exact_result(self, x: torch.Tensor) -> aref.AdderResult:
        """The exact fixed-point reference for a float input ``x`` (needs ``config.act_bits``)."""
        act = self.config.act_bits
        if act is None:
            raise ValueError("exact_result needs fixed-point activations (config.act_bits)")
        x_q = to_fixed(x, act[0], act[1], self.config.rounding)
        return self._reference(x_q, self.integer_weights(), act[1])

    def exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Exact output (float32, no autograd): fixed point ``exact_result(x).out``; float mode: float64
        ``-Σ|x - w|`` rounded once to float32, ``+ bias``."""
        with torch.no_grad():
            if self.config.act_bits is not None:
                return self.exact_result(x).out
            return self._reference_float(x)

    def _bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.detach()

    def _extra_common(self) -> str:
        s = f"bias={self.bias is not None}"
        if self.config.act_bits is not None:
            s += (f", act_bits={self.config.act_bits}, weight_bits={self.config.weight_total_bits}, "
                  f"rounding={self.config.rounding}")
        else:
            s += ", float"
        if self.config.adaptive_lr is not None:
            s += f", adaptive_lr={self.config.adaptive_lr}"
        return s + (", exact=True" if self.exact else "")


class LinearAdder(AdderLayer):
    """Adder dense layer ``y[..., o] = -Σ_k |x[..., k] - W[o, k]| (+ b[o])``; arguments as ``nn.Linear`` plus
    ``config`` (:class:`AdderConfig`, default float)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 config: AdderConfig | None = None, *, device: _Device = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if self.in_features < 0 or self.out_features < 0:
            raise ValueError(f"LinearAdder: sizes must be >= 0, got ({in_features}, {out_features})")
        self._init_params((self.out_features, self.in_features), bias, config, device, dtype)

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = adder_rows(x.reshape(1, -1, x.shape[-1]), w.unsqueeze(0))[0]
        y = y.reshape(lead + (self.out_features,))
        return y if self.bias is None else y + self.bias

    def _reference(self, x_q, w_q, frac_bits):
        return aref.adder_linear(x_q, w_q, frac_bits, self._bias())

    def _reference_float(self, x):
        return aref.adder_linear_float(x, self.weight.detach(), self._bias())

    @classmethod
    def from_float(cls, module: nn.Linear, config: AdderConfig | None = None) -> "LinearAdder":
        """A ``LinearAdder`` of an ``nn.Linear``'s shape carrying its weight and bias (as AdderNet's conversion
        does; the outputs differ, since the layer computes something else)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"LinearAdder.from_float needs an nn.Linear, got {type(module).__name__}")
        w = module.weight
        new = cls(module.in_features, module.out_features, module.bias is not None, config,
                  device=w.device, dtype=w.dtype)
        _carry(new, module)
        return new

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + self._extra_common()


def _pair(v, name: str, minimum: int) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(int(a) for a in v)
    if len(t) != 2 or min(t) < minimum:
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {v!r}")
    return t  # type: ignore[return-value]


class Conv2dAdder(AdderLayer):
    """Adder 2-D convolution; arguments as ``nn.Conv2d`` (``padding_mode='zeros'`` only) plus ``config``.

    A zero-padded position contributes ``-|w|``. ``padding='same'`` (stride 1) pads like ``F.conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", config: AdderConfig | None = None, *, device: _Device = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"Conv2dAdder supports only padding_mode='zeros', got {padding_mode!r}")
        groups = int(groups)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2dAdder: in_channels={in_channels} and out_channels={out_channels} must be "
                             f"divisible by groups={groups} >= 1")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), groups
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = _pair(dilation, "dilation", 1)
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2dAdder: padding string must be 'same' or 'valid', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2dAdder: padding='same' needs stride 1; give explicit padding")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = _pair(padding, "padding", 0)
        shape = (self.out_channels, self.in_channels // groups) + self.kernel_size
        self._init_params(shape, bias, config, device, dtype)

    def explicit_padding(self, h: int | None = None, w: int | None = None) -> tuple[int, int, int, int]:
        """Zero padding ``(top, left, bottom, right)`` (``'same'``: extra zero at the bottom/right)."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            th = self.dilation[0] * (self.kernel_size[0] - 1)
            tw = self.dilation[1] * (self.kernel_size[1] - 1)
            return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        return normalize_padding(self.padding)  # type: ignore[arg-type]

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        pad = self.explicit_padding()
        y = adder_conv2d_train(x, w, self.stride, pad, self.dilation, self.groups)
        return y if self.bias is None else y + self.bias.view(-1, 1, 1)

    def _reference(self, x_q, w_q, frac_bits):
        return aref.adder_conv2d(x_q, w_q, frac_bits, self._bias(), self.stride, self.explicit_padding(),
                                 self.dilation, self.groups)

    def _reference_float(self, x):
        return aref.adder_conv2d_float(x, self.weight.detach(), self._bias(), self.stride,
                                       self.explicit_padding(), self.dilation, self.groups)

    @classmethod
    def from_float(cls, module: nn.Conv2d, config: AdderConfig | None = None) -> "Conv2dAdder":
        """A ``Conv2dAdder`` of an ``nn.Conv2d``'s geometry carrying its weight and bias."""
        new = cls(**conv2d_init_kwargs(module, "Conv2dAdder"), config=config)
        _carry(new, module)
        return new

    def extra_repr(self) -> str:
        return conv2d_geometry_repr(self) + ", " + self._extra_common()


@torch.no_grad()
def _carry(new: AdderLayer, module: nn.Module) -> None:
    new.weight.copy_(module.weight)
    if module.bias is not None:
        new.bias.copy_(module.bias)
    new.train(module.training)


def adder_layers(model: nn.Module) -> Iterator[AdderLayer]:
    """Every adder layer in ``model`` (``modules()`` order)."""
    for m in model.modules():
        if isinstance(m, AdderLayer):
            yield m
