"""``numerics="deepshift"``: the arithmetic of the original DeepShift code, reproduced exactly.

The original DeepShift (mostafaelhoushi/DeepShift, ``use_kernel=False``) differs from shiftcomp's exact
contract in three places. With ``ShiftConfig(numerics="deepshift")`` the layers, the integer reference and
the compiled kernels all follow the original instead (and stay bit-exact with each other):

1. **Activation clamp.** Its ``round_to_fixed`` clamps the *value* at ``2**(I-1) - 1`` (not
   ``2**(I-1) - 2**-F``), so the largest code is ``x_q = 2**(I+F-1) - 2**F``. Compiled: the quantise
   prologue's upper clamp.
2. **PS linear layers never quantise.** Its PS ``LinearShift`` rounds neither its input nor its bias (a TODO
   in its code), so ``-ab`` has no effect there: such a layer runs with float activations (the layer's
   effective ``act_bits`` is ``None``; compiled: the float-activation exponent-add kernel).
3. **Conv bias rounding.** Its conv layers (Q and PS) round the bias to ``Q(I, F)`` with floor (and the
   clamp of 1.) in every forward. Q linear layers add their bias as stored. Compiled: the rounded bias is a
   constant.

Activation rounding is a separate field: DeepShift always floors (``rounding="floor"``, which the importer
sets); its ``-r deterministic|stochastic`` flag is about weights. ``I = 1`` is refused: there the original
returns ``sign(x) - 1``, which is not a fixed-point format.
"""
from __future__ import annotations

import dataclasses

import torch

from shiftcomp.config import ShiftConfig

__all__ = ["is_deepshift", "layer_config", "act_qmax", "clamp_fixed", "clamp_fake", "round_bias",
           "rounds_bias", "round_to_fixed"]

LINEAR, CONV2D = "linear", "conv2d"


def is_deepshift(config: ShiftConfig | None) -> bool:
    """Whether ``config`` asks for the original DeepShift numerics."""
    return config is not None and getattr(config, "numerics", "exact") == "deepshift"


def layer_config(config: ShiftConfig, kind: str) -> ShiftConfig:
    """The config a layer of ``kind`` (``"linear"``/``"conv2d"``) really runs with.

    Exact numerics: ``config`` unchanged. DeepShift numerics: a PS linear layer gets ``act_bits=None`` (it never
    quantised); ``I = 1`` raises ``ValueError``.
    """
    if not is_deepshift(config):
        return config
    if config.act_bits is not None and config.act_bits[0] == 1:
        raise ValueError("numerics='deepshift' with I=1: the original round_to_fixed returns sign(x) - 1 there, "
                         "which is no fixed-point format; use I >= 2 or numerics='exact'")
    if kind == LINEAR and config.mode == "PS" and config.act_bits is not None:
        return dataclasses.replace(config, act_bits=None)
    return config


def act_qmax(config: ShiftConfig | None) -> int | None:
    """Largest activation code under DeepShift numerics (``2**(I+F-1) - 2**F``), or ``None`` (the standard one)."""
    if not is_deepshift(config) or config.act_bits is None:
        return None
    i_bits, f_bits = config.act_bits
    return 2 ** (i_bits + f_bits - 1) - 2 ** f_bits


def clamp_fixed(x_q: torch.Tensor, config: ShiftConfig) -> torch.Tensor:
    """Apply DeepShift's upper clamp to integer codes ``x_q`` (no-op under exact numerics)."""
    qmax = act_qmax(config)
    return x_q if qmax is None else x_q.clamp(max=qmax)


def clamp_fake(y: torch.Tensor, config: ShiftConfig) -> torch.Tensor:
    """Apply DeepShift's upper clamp to fake-quantised values ``y`` (straight-through gradient, like the original)."""
    qmax = act_qmax(config)
    if qmax is None:
        return y
    top = qmax * 2.0 ** -config.act_bits[1]
    return y - (y - y.clamp(max=top)).detach()


def round_to_fixed(x: torch.Tensor, i_bits: int, f_bits: int) -> torch.Tensor:
    """The original ``round_to_fixed``: ``clamp(floor(x * 2**F) * 2**-F, -2**(I-1), 2**(I-1) - 1)`` (float).

    Computed as the original does, in ``x``'s dtype (exact for float32 and power-of-two scales).
    """
    if i_bits < 2:
        raise ValueError("round_to_fixed: I must be >= 2 (the original returns sign(x) - 1 for I=1)")
    delta = 2.0 ** -f_bits
    bound = 2.0 ** (i_bits - 1)
    return torch.clamp(torch.floor(x / delta) * delta, -bound, bound - 1)


class _RoundToFixedSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, i_bits: int, f_bits: int) -> torch.Tensor:  # type: ignore[override]
        return round_to_fixed(x, i_bits, f_bits)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return g, None, None


def rounds_bias(config: ShiftConfig | None, kind: str) -> bool:
    """Whether a layer of ``kind`` rounds its bias in the forward (DeepShift numerics, conv, fixed point)."""
    return is_deepshift(config) and kind == CONV2D and config.act_bits is not None


def round_bias(bias: torch.Tensor | None, config: ShiftConfig, kind: str) -> torch.Tensor | None:
    """The bias a layer of ``kind`` adds: rounded to ``Q(I, F)`` with floor for DeepShift conv layers, else as is.

    Differentiable (straight-through, like the original).
    """
    if bias is None or not rounds_bias(config, kind):
        return bias
    i_bits, f_bits = config.act_bits
    return _RoundToFixedSTE.apply(bias, i_bits, f_bits)
