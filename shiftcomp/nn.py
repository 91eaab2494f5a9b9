"""Shift layers: ``LinearShift`` and ``Conv2dShift`` (DeepShift Q and PS modes), plus small helpers.

A shift layer's weight is ``sign * 2**shift`` with ``sign`` in {-1, 0, +1} and an integer ``shift`` in the
config's range ``[lo, hi]`` (docs/numerics.md, Weights). Parameters:

* Q mode: a float ``weight`` (shaped like ``nn.Linear``/``nn.Conv2d``'s), rounded in every forward
  (:func:`shiftcomp.quant.q_fake_weight`, straight-through gradient). Training keeps the float weight.
* PS mode: float ``shift`` and ``sign`` parameters of the weight's shape
  (:func:`shiftcomp.quant.ps_fake_weight`). In training mode the forward clamps ``shift`` into ``[lo, hi]``
  in place (under ``no_grad``), as DeepShift does, so the parameter cannot drift outside the range.
* both: a float ``bias`` or ``None``.

Forward (training, and eval by default): ``x -> fake_quant_act(x)`` (if ``act_bits``)
``-> F.linear/F.conv2d(x, quantized_weight(), bias)`` — float32 arithmetic, differentiable.
With ``layer.exact = True`` in eval mode the forward is the exact reference instead
(:mod:`shiftcomp.reference`): fixed point ``shift_*(to_fixed(x), ...).out``, or with float activations the
float64 computation rounded once to float32; the output is float32 and not differentiable.

Fixes over the original DeepShift code (each one tested): a zero sign is a zero weight (not +1); conv
padding applies to H and W; layers without bias work; grouped/depthwise convs work; the integer weights
are a pure function of the saved parameters, so a reloaded ``state_dict`` gives identical results.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from shiftcomp import deepshift, reference
from shiftcomp.config import ShiftConfig
from shiftcomp.conv_geometry import conv2d_geometry_repr, conv2d_init_kwargs
from shiftcomp.quant import (fake_quant_act, ps_fake_weight, ps_round, q_fake_weight, q_round, round_ste,
                             to_fixed)

_Device = Union[torch.device, str, int, None]

__all__ = ["ShiftLayer", "LinearShift", "Conv2dShift", "is_shift_layer", "shift_layers", "named_shift_layers",
           "shift_weight_decay", "AdderLayer", "LinearAdder", "Conv2dAdder"]


def _pair(v: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    if isinstance(v, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, int):
        t = (v, v)
    else:
        t = tuple(int(a) for a in v)
        if len(t) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    if min(t) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v!r}")
    return t  # type: ignore[return-value]


class ShiftLayer(reference.ExactSwitch, nn.Module):
    """Base class of the shift layers (use :class:`LinearShift` / :class:`Conv2dShift`).

    Attributes:
        config: the layer's :class:`ShiftConfig` (a private copy).
        exact: when True and the layer is in eval mode, the forward runs the exact reference.
    """

    config: ShiftConfig
    exact: bool
    weight_shape: tuple[int, ...]
    _kind: str = ""  # "linear" / "conv2d" (shiftcomp.deepshift's layer kinds)

    def _init_params(self, weight_shape: tuple[int, ...], bias: bool, config: ShiftConfig | None,
                     device: _Device = None, dtype: torch.dtype | None = None) -> None:
        if config is None:
            config = ShiftConfig()
        if not isinstance(config, ShiftConfig):
            raise TypeError(f"config must be a ShiftConfig, got {type(config).__name__}")
        self.config = dataclasses.replace(config)          # private, re-validated copy
        self.config = deepshift.layer_config(self.config, self._kind)   # numerics="deepshift": PS linear floats
        self.exact = False
        self.weight_shape = tuple(int(s) for s in weight_shape)
        fk = {"device": device, "dtype": dtype}
        if self.config.mode == "Q":
            self.weight = nn.Parameter(torch.empty(self.weight_shape, **fk))
        else:
            self.shift = nn.Parameter(torch.empty(self.weight_shape, **fk))
            self.sign = nn.Parameter(torch.empty(self.weight_shape, **fk),
                                     requires_grad=not self.config.freeze_sign)
        if bias:
            self.bias = nn.Parameter(torch.empty(self.weight_shape[0], **fk))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    # -------------------------------------------------------------------------------------- init
    @property
    def fan_in(self) -> int:
        """Inputs per output (``in_features`` or ``in_channels // groups * KH * KW``)."""
        return int(math.prod(self.weight_shape[1:]))

    def _reset_shift(self) -> None:  # overridden by Conv2dShift (DeepShift inits conv shifts differently)
        lo, hi = self.shift_bounds
        nn.init.uniform_(self.shift, lo, hi)

    def reset_parameters(self) -> None:
        """DeepShift initialisation.

        Q: like ``nn.Linear``/``nn.Conv2d`` (Kaiming-uniform weight). PS: ``shift ~ U(lo, hi)`` (Linear) or
        ``U(-10, -1)`` clipped into ``[lo, hi]`` (Conv2d), ``sign ~ U(-1, 1)``. Bias: ``U(±1/sqrt(fan_in))``.
        """
        with torch.no_grad():
            if self.config.mode == "Q":
                nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            else:
                self._reset_shift()
                nn.init.uniform_(self.sign, -1.0, 1.0)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.fan_in) if self.fan_in > 0 else 0.0
                nn.init.uniform_(self.bias, -bound, bound)

    # -------------------------------------------------------------------------------------- weights
    @property
    def shift_bounds(self) -> tuple[int, int]:
        """The layer's shift range ``(lo, hi)`` (from its config)."""
        return self.config.shift_bounds

    def integer_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rounded weights as integers: ``(shift, sign)``, both ``int8``, shaped like the weight.

        ``sign`` in {-1, 0, +1}; ``shift`` in ``[lo, hi]``. Where ``sign == 0`` (a zero weight) the shift is
        reported as ``lo`` (a canonical value; it does not affect any result). Detached, on the
        parameters' device. Raises ``ValueError`` if a parameter is NaN.
        """
        lo, hi = self.shift_bounds
        zf = self.config.zero_free
        if self.config.mode == "Q":
            return q_round(self.weight, lo, hi, zf)
        return ps_round(self.shift, self.sign, lo, hi, zf)

    def quantized_weight(self) -> torch.Tensor:
        """The float weight ``sign * 2**shift`` (exact, parameter dtype), differentiable (Q: STE; PS: docs/numerics.md, Weights)."""
        lo, hi = self.shift_bounds
        zf = self.config.zero_free
        if self.config.mode == "Q":
            return q_fake_weight(self.weight, lo, hi, zf)
        return ps_fake_weight(self.shift, self.sign, lo, hi, zf)

    @torch.no_grad()
    def clamp_shift_(self) -> None:
        """PS: clamp the ``shift`` parameter into ``[lo, hi]`` in place (no-op in Q mode)."""
        if self.config.mode == "PS":
            lo, hi = self.shift_bounds
            self.shift.clamp_(lo, hi)

    # -------------------------------------------------------------------------------------- forward
    def _linear_op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def effective_bias(self) -> torch.Tensor | None:
        """The bias the layer adds: ``bias``, or under ``numerics="deepshift"`` a conv's bias floored to Q(I, F)."""
        return deepshift.round_bias(self.bias, self.config, self._kind)

    def _reference(self, x_q: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor,
                   frac_bits: int) -> reference.ShiftResult:
        raise NotImplementedError

    def _reference_float(self, x: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quant forward (float, differentiable), or the exact reference when ``exact`` and in eval mode."""
        if self.exact and not self.training:
            return self.exact_forward(x)
        if self.training and self.config.mode == "PS":
            self.clamp_shift_()
        act = self.config.act_bits
        if act is not None:
            x = fake_quant_act(x, act[0], act[1], self.config.rounding, self.config.act_grad)
            x = deepshift.clamp_fake(x, self.config)
        return self._linear_op(x, self.quantized_weight())

    def exact_result(self, x: torch.Tensor) -> reference.ShiftResult:
        """The exact fixed-point reference for input ``x`` (float): ``to_fixed`` then ``shift_linear``/``shift_conv2d``.

        Needs ``config.act_bits``; returns the :class:`~shiftcomp.reference.ShiftResult` (``acc``, ``s0``, ``out``).
        """
        act = self.config.act_bits
        if act is None:
            raise ValueError("exact_result needs fixed-point activations (config.act_bits); "
                             "use exact_forward for float activations")
        shift, sign = self.integer_weights()
        x_q = deepshift.clamp_fixed(to_fixed(x, act[0], act[1], self.config.rounding), self.config)
        return self._reference(x_q, shift, sign, act[1])

    def exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exact output (float32, no autograd) for a float input ``x``.

        Fixed point: ``exact_result(x).out``. Float activations: ``x`` (as given) times the exact weights in
        float64, rounded once to float32, ``+ bias`` in float32.
        """
        with torch.no_grad():
            if self.config.act_bits is not None:
                return self.exact_result(x).out
            shift, sign = self.integer_weights()
            return self._reference_float(x, shift, sign)

    @classmethod
    def _float_type(cls) -> type:
        raise NotImplementedError

    def _extra_common(self) -> str:
        lo, hi = self.shift_bounds
        s = f"bias={self.bias is not None}, mode={self.config.mode}, shift_range=({lo}, {hi})"
        if self.config.act_bits is not None:
            s += f", act_bits={self.config.act_bits}, rounding={self.config.rounding}"
        else:
            s += ", act_bits=None (float activations)"
        if self.config.mode == "PS" and self.config.freeze_sign:
            s += ", freeze_sign=True"
        if self.config.zero_free:
            s += ", zero_free=True"
        if self.exact:
            s += ", exact=True"
        return s


class LinearShift(ShiftLayer):
    """Shift dense layer ``y = x W^T + b`` with ``W = sign * 2**shift``; input ``(..., in_features)``.

    Args:
        in_features, out_features: sizes (``>= 0``, as ``nn.Linear``).
        bias: learnable float bias (default True).
        config: :class:`ShiftConfig` (default ``ShiftConfig()``: Q, 5 bits, float activations).
        device, dtype: factory kwargs for the parameters (as ``nn.Linear``).
    """

    _kind = "linear"

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 config: ShiftConfig | None = None, *, device: _Device = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if self.in_features < 0 or self.out_features < 0:
            raise ValueError(f"LinearShift: sizes must be >= 0, got ({in_features}, {out_features})")
        self._init_params((self.out_features, self.in_features), bias, config, device, dtype)

    def _linear_op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w, self.bias)

    def _reference(self, x_q: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor,
                   frac_bits: int) -> reference.ShiftResult:
        return reference.shift_linear(x_q, shift, sign, frac_bits, self._ref_bias())

    def _reference_float(self, x: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        return reference.shift_linear_float(x, shift, sign, self._ref_bias())

    def _ref_bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.detach()

    @classmethod
    def _float_type(cls) -> type:
        return nn.Linear

    @classmethod
    def from_float(cls, module: nn.Linear, config: ShiftConfig | None = None) -> "LinearShift":
        """A ``LinearShift`` carrying a float ``nn.Linear``'s weights (same device/dtype/training mode).

        Q: ``weight`` copied unchanged (rounded in every forward). PS: ``shift = round(log2|w|)`` clamped into
        the range and ``sign = sign(w)`` (exactly :func:`~shiftcomp.quant.q_round`), as floats. Bias copied.
        """
        if not isinstance(module, nn.Linear):
            raise TypeError(f"LinearShift.from_float needs an nn.Linear, got {type(module).__name__}")
        w = module.weight
        new = cls(module.in_features, module.out_features, bias=module.bias is not None, config=config,
                  device=w.device, dtype=w.dtype)
        _carry(new, module)
        return new

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + self._extra_common()


class Conv2dShift(ShiftLayer):
    """Shift 2-D convolution (like ``nn.Conv2d``) with weights ``sign * 2**shift`` of shape
    ``(out_channels, in_channels // groups, KH, KW)``; input ``(N, C, H, W)`` or ``(C, H, W)``.

    Args:
        in_channels, out_channels: channel counts, both divisible by ``groups``.
        kernel_size, stride, dilation: int or pair (``>= 1``).
        padding: int or pair (``>= 0``) of zeros, or ``'valid'`` (none) or ``'same'`` (``stride == 1`` only;
            PyTorch's convention: an odd total puts the extra zero at the bottom/right).
        groups: channel groups (``groups == in_channels`` is depthwise).
        bias: learnable float bias (default True).
        padding_mode: only ``'zeros'`` (the shift kernels pad with zeros); anything else is a ValueError.
        config: :class:`ShiftConfig` (default ``ShiftConfig()``).
        device, dtype: factory kwargs for the parameters.
    """

    _kind = "conv2d"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", config: ShiftConfig | None = None, *, device: _Device = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"Conv2dShift supports only padding_mode='zeros' (the shift kernels pad with "
                             f"zeros), got padding_mode={padding_mode!r}")
        groups = int(groups)
        if groups < 1:
            raise ValueError(f"Conv2dShift: groups must be >= 1, got {groups}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2dShift: in_channels={in_channels} and out_channels={out_channels} must be "
                             f"divisible by groups={groups}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = _pair(dilation, "dilation", 1)
        self.groups = groups
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2dShift: padding string must be 'same' or 'valid', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2dShift: padding='same' is not supported for strided convolutions "
                                 "(as in nn.Conv2d); give explicit padding")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = _pair(padding, "padding", 0)
        shape = (self.out_channels, self.in_channels // groups) + self.kernel_size
        self._init_params(shape, bias, config, device, dtype)

    def _reset_shift(self) -> None:
        lo, hi = self.shift_bounds
        nn.init.uniform_(self.shift, -10.0, -1.0)
        self.shift.clamp_(lo, hi)

    def explicit_padding(self, h: int | None = None, w: int | None = None) -> tuple[int, int, int, int]:
        """Zero padding as ``(top, left, bottom, right)`` for an input of height ``h``, width ``w``.

        Resolves ints/pairs (symmetric), ``'valid'`` (zeros) and ``'same'`` (total ``dilation*(k-1)`` per
        dim, ``total // 2`` before, the rest after, as ``F.conv2d``). With stride 1 the result does not
        depend on ``h``/``w``; they are accepted for interface stability.
        """
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            th = self.dilation[0] * (self.kernel_size[0] - 1)
            tw = self.dilation[1] * (self.kernel_size[1] - 1)
            return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        ph, pw = self.padding  # type: ignore[misc]
        return (ph, pw, ph, pw)

    def _linear_op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, self.effective_bias(), self.stride, self.padding, self.dilation, self.groups)

    def _ref_bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.effective_bias().detach()

    def _reference(self, x_q: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor,
                   frac_bits: int) -> reference.ShiftResult:
        pad = self.explicit_padding(x_q.shape[-2], x_q.shape[-1])
        return reference.shift_conv2d(x_q, shift, sign, frac_bits, self._ref_bias(), self.stride, pad,
                                      self.dilation, self.groups)

    def _reference_float(self, x: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        pad = self.explicit_padding(x.shape[-2], x.shape[-1])
        return reference.shift_conv2d_float(x, shift, sign, self._ref_bias(), self.stride, pad,
                                            self.dilation, self.groups)

    @classmethod
    def _float_type(cls) -> type:
        return nn.Conv2d

    @classmethod
    def from_float(cls, module: nn.Conv2d, config: ShiftConfig | None = None) -> "Conv2dShift":
        """A ``Conv2dShift`` carrying a float ``nn.Conv2d``'s geometry and weights (see ``LinearShift.from_float``).

        Raises ``ValueError`` for ``padding_mode != 'zeros'``.
        """
        new = cls(**conv2d_init_kwargs(module, "Conv2dShift"), config=config)
        _carry(new, module)
        return new

    def extra_repr(self) -> str:
        return conv2d_geometry_repr(self) + ", " + self._extra_common()


@torch.no_grad()
def _carry(new: ShiftLayer, module: nn.Module) -> None:
    """Copy a float layer's weight (Q) or its rounded shift/sign (PS), and bias, into ``new``."""
    w = module.weight
    if new.config.mode == "Q":
        new.weight.copy_(w)
    else:
        lo, hi = new.shift_bounds
        shift, sign = q_round(w, lo, hi, new.config.zero_free)
        new.shift.copy_(shift)
        new.sign.copy_(sign)
    if module.bias is not None:
        new.bias.copy_(module.bias)
    new.train(module.training)


# ---------------------------------------------------------------------------------------------- helpers
def is_shift_layer(m: object) -> bool:
    """The one test for "is this a shift layer" (any :class:`ShiftLayer`, subclasses included)."""
    return isinstance(m, ShiftLayer)


def named_shift_layers(model: nn.Module) -> Iterator[tuple[str, ShiftLayer]]:
    """``(qualified name, layer)`` for every shift layer in ``model`` (``named_modules`` order, ``model`` included)."""
    for name, m in model.named_modules():
        if is_shift_layer(m):
            yield name, m


def shift_layers(model: nn.Module) -> Iterator[ShiftLayer]:
    """Every shift layer in ``model`` (``modules()`` order, ``model`` itself included if it is one)."""
    for _, m in named_shift_layers(model):
        yield m


def shift_weight_decay(model: nn.Module, wd: float) -> torch.Tensor:
    """DeepShift-PS weight decay term to add to the loss: ``wd * 0.5 * Σ (2**shift_q)**2`` over PS layers.

    ``shift_q = round(clamp(shift, lo, hi))`` with a straight-through round, so the gradient w.r.t. ``shift``
    is ``wd * (2**shift_q)**2 * ln 2`` inside the range. (Exclude ``shift``/``sign`` from the optimizer's own
    weight decay when using this, as DeepShift does.) Returns a scalar tensor (0 without PS layers).
    """
    total: torch.Tensor | None = None
    for m in shift_layers(model):
        if m.config.mode != "PS":
            continue
        lo, hi = m.shift_bounds
        s = round_ste(m.shift.clamp(lo, hi))
        term = torch.exp2(2.0 * s).sum()          # (2**s)**2; exp2 of an integer is exact enough here
        total = term if total is None else total + term.to(total.device)
    if total is None:
        p = next(iter(model.parameters()), None)
        return torch.zeros((), device=None if p is None else p.device)
    return wd * 0.5 * total


from shiftcomp.adder import AdderLayer, Conv2dAdder, LinearAdder  # noqa: E402  adder layers (AdderNet)
