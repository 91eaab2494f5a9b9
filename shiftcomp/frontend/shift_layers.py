"""Reading a shift layer (``shiftcomp.nn.LinearShift`` / ``Conv2dShift``) into a :class:`ShiftLayerInfo`
plus its exact integer weights -- the only place the frontend touches the layers' Python API."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from shiftcomp.deepshift import act_qmax
from shiftcomp.nn import Conv2dShift, LinearShift
from shiftcomp.reference import acc_shift

from .composite import ShiftLayerInfo

__all__ = ["ShiftLayerData", "read_shift_layer"]


@dataclasses.dataclass(frozen=True)
class ShiftLayerData:
    """One shift layer as the frontend imports it.

    Attributes:
        info: geometry and numeric format.
        shift: int8 shifts, shaped like the weight.
        sign: int8 signs in {-1, 0, +1}, shaped like the weight.
        bias: float32 bias ``(out_channels,)`` or ``None``.
    """

    info: ShiftLayerInfo
    shift: np.ndarray
    sign: np.ndarray
    bias: np.ndarray | None

    @property
    def float_weight(self) -> np.ndarray:
        """``sign * 2**shift`` as float32 (exact: shifts lie in the normal float32 range)."""
        return (self.sign.astype(np.float32) * np.ldexp(np.float32(1), self.shift.astype(np.int32))).astype(
            np.float32)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    return (t[0], t[0]) if len(t) == 1 else (t[0], t[1])


def read_shift_layer(name: str, module: nn.Module, in_shape: tuple[int, ...]) -> ShiftLayerData:
    """Extract a shift layer's info, integer weights and bias for an input of shape ``in_shape``.

    Args:
        name: module path of the layer in the model.
        module: the ``LinearShift`` or ``Conv2dShift`` (eval mode).
        in_shape: static input shape (dense ``(..., K)``; conv2d ``(N, C, H, W)``).
    """
    cfg = module.config
    with torch.no_grad():
        shift_t, sign_t = module.integer_weights()
    shift = shift_t.detach().cpu().to(torch.int8).numpy().copy()
    sign = sign_t.detach().cpu().to(torch.int8).numpy().copy()
    s0 = int(acc_shift(shift_t, sign_t))
    bias = None
    if getattr(module, "bias", None) is not None:
        with torch.no_grad():  # numerics="deepshift": a conv's bias is rounded, a constant here
            bias_t = module.effective_bias() if hasattr(module, "effective_bias") else module.bias
        bias = bias_t.detach().cpu().to(torch.float32).numpy().copy()
    common = dict(layer=name, weight_shape=tuple(int(d) for d in shift.shape),
                  act_bits=None if cfg.act_bits is None else tuple(int(v) for v in cfg.act_bits),
                  rounding=str(cfg.rounding), mode=str(cfg.mode), weight_bits=int(cfg.weight_bits),
                  shift_range=tuple(int(v) for v in cfg.shift_bounds), s0=s0, has_bias=bias is not None,
                  act_qmax=act_qmax(cfg))
    in_shape = tuple(int(d) for d in in_shape)
    if isinstance(module, LinearShift):
        n_out, k = shift.shape
        if in_shape[-1] != k:
            raise ValueError(f"shift layer {name!r}: input has {in_shape[-1]} features, layer expects {k}")
        info = ShiftLayerInfo(kind="dense", in_shape=in_shape, out_shape=in_shape[:-1] + (n_out,), **common)
    elif isinstance(module, Conv2dShift):
        if len(in_shape) != 4:
            raise ValueError(f"shift layer {name!r}: Conv2dShift needs an (N, C, H, W) input, got {in_shape}")
        n, c, h, w = in_shape
        o, cg, kh, kw = shift.shape
        groups = int(module.groups)
        if c != cg * groups:
            raise ValueError(f"shift layer {name!r}: input has {c} channels, layer expects {cg * groups}")
        if getattr(module, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"shift layer {name!r}: padding_mode={module.padding_mode!r} is not supported "
                             f"(only 'zeros')")
        top, left, bottom, right = (int(p) for p in module.explicit_padding(h, w))
        (sh, sw), (dh, dw) = _pair(module.stride), _pair(module.dilation)
        oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        info = ShiftLayerInfo(kind="conv2d", in_shape=in_shape, out_shape=(n, o, oh, ow), strides=(sh, sw),
                              padding=(top, left, bottom, right), dilation=(dh, dw), groups=groups, **common)
    else:  # pragma: no cover - guarded by the tracer
        raise TypeError(f"{name!r} is not a shift layer: {type(module).__name__}")
    return ShiftLayerData(info=info, shift=shift, sign=sign, bias=bias)
