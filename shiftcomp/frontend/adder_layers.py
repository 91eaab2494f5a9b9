"""Adder layers (``shiftcomp.nn.LinearAdder`` / ``Conv2dAdder``) in Relax: marked composite functions.

Each adder layer is imported as

    x_q = <quantise prologue>(x)                               # plain Relax ops; absent in float mode
    y   = composite_adder_<kind>_<layer>(x_q, w, [bias])       # a call to a private Relax function

where ``w`` is a constant: the fixed-point weights ``w_q`` as ``int32`` (float mode: the float32 weights),
and the callee carries the attributes of :class:`AdderLayerInfo` (``{"Composite": "shiftcomp.adder_conv2d",
...}``). The callee's body is a runnable fallback (dense: broadcast ``-sum(abs(x - w))`` in Relax ops;
conv: a ``call_tir`` of the unscheduled plain adder kernel), so the module runs as imported.
``passes/lower_adder.py`` replaces the calls by ``call_tir`` of the scheduled adder kernels.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import torch
from torch import nn
from tvm import relax

__all__ = ["COMPOSITE_ADDER_DENSE", "COMPOSITE_ADDER_CONV2D", "ADDER_COMPOSITES", "AdderLayerInfo",
           "AdderLayerData", "adder_layer_types", "is_adder_layer", "read_adder_layer", "adder_composite_info",
           "emit_adder_layer"]

COMPOSITE_ADDER_DENSE = "shiftcomp.adder_dense"      #: composite name of an adder linear layer
COMPOSITE_ADDER_CONV2D = "shiftcomp.adder_conv2d"    #: composite name of an adder conv2d layer
ADDER_COMPOSITES = (COMPOSITE_ADDER_DENSE, COMPOSITE_ADDER_CONV2D)

#: argument order of an adder composite call
ARG_X, ARG_W, ARG_BIAS = range(3)


def adder_layer_types() -> tuple[type, ...]:
    """The adder layer classes."""
    from shiftcomp.adder import Conv2dAdder, LinearAdder

    return (LinearAdder, Conv2dAdder)


def is_adder_layer(m: nn.Module) -> bool:
    """True for a shiftcomp adder layer."""
    return isinstance(m, adder_layer_types())


@dataclasses.dataclass(frozen=True)
class AdderLayerInfo:
    """What the passes need to know about one adder layer (stored as function attributes).

    Attributes:
        layer, kind (``"dense"``/``"conv2d"``), in_shape, out_shape, weight_shape: as for shift layers.
        act_bits: ``(I, F)`` or ``None`` (float mode); rounding: activation rounding.
        weight_bits: total bits of ``w_q`` (0 in float mode).
        strides, padding (top, left, bottom, right), dilation, groups: conv geometry.
        has_bias: whether the layer has a bias.
    """

    layer: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    act_bits: tuple[int, int] | None
    rounding: str
    weight_bits: int
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    has_bias: bool = False

    s0 = 0  #: no accumulator shift (read by per-layer summaries shared with shift layers)

    @property
    def composite(self) -> str:
        return COMPOSITE_ADDER_DENSE if self.kind == "dense" else COMPOSITE_ADDER_CONV2D

    @property
    def frac_bits(self) -> int | None:
        return None if self.act_bits is None else self.act_bits[1]

    def to_attrs(self) -> dict[str, Any]:
        i_bits, f_bits = self.act_bits if self.act_bits is not None else (-1, -1)
        return {"Composite": self.composite, "layer": self.layer, "kind": self.kind,
                "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
                "weight_shape": list(self.weight_shape), "int_bits": i_bits, "frac_bits": f_bits,
                "act_float": int(self.act_bits is None), "rounding": self.rounding, "weight_bits": self.weight_bits,
                "strides": list(self.strides), "padding": list(self.padding), "dilation": list(self.dilation),
                "groups": self.groups, "has_bias": int(self.has_bias)}

    @classmethod
    def from_attrs(cls, attrs: Any) -> "AdderLayerInfo":
        a = {str(k): attrs[k] for k in attrs.keys()}
        ints = lambda v: tuple(int(x) for x in v)  # noqa: E731
        act = None if int(a["act_float"]) else (int(a["int_bits"]), int(a["frac_bits"]))
        return cls(layer=str(a["layer"]), kind=str(a["kind"]), in_shape=ints(a["in_shape"]),
                   out_shape=ints(a["out_shape"]), weight_shape=ints(a["weight_shape"]), act_bits=act,
                   rounding=str(a["rounding"]), weight_bits=int(a["weight_bits"]), strides=ints(a["strides"]),
                   padding=ints(a["padding"]), dilation=ints(a["dilation"]), groups=int(a["groups"]),
                   has_bias=bool(int(a["has_bias"])))


def adder_composite_info(func: Any) -> AdderLayerInfo | None:
    """The :class:`AdderLayerInfo` of a Relax function if it is an adder composite, else ``None``."""
    if not isinstance(func, relax.Function) or func.attrs is None or "Composite" not in func.attrs:
        return None
    if str(func.attrs["Composite"]) not in ADDER_COMPOSITES:
        return None
    return AdderLayerInfo.from_attrs(func.attrs)


@dataclasses.dataclass(frozen=True)
class AdderLayerData:
    """One adder layer as imported: info, weights (``int64`` ``w_q``, or float32 in float mode), bias."""

    info: AdderLayerInfo
    weight: np.ndarray
    bias: np.ndarray | None


def read_adder_layer(name: str, module: nn.Module, in_shape: tuple[int, ...]) -> AdderLayerData:
    """Extract an adder layer's info, weights and bias for an input of shape ``in_shape``."""
    from shiftcomp.adder import Conv2dAdder

    cfg = module.config
    with torch.no_grad():
        if cfg.act_bits is None:
            w = module.weight.detach().cpu().to(torch.float32).numpy().copy()
        else:
            w = module.integer_weights().cpu().numpy().astype(np.int64)
    bias = None if module.bias is None else module.bias.detach().cpu().to(torch.float32).numpy().copy()
    in_shape = tuple(int(d) for d in in_shape)
    common = dict(layer=name, weight_shape=tuple(int(d) for d in w.shape),
                  act_bits=None if cfg.act_bits is None else tuple(int(v) for v in cfg.act_bits),
                  rounding=str(cfg.rounding), weight_bits=int(cfg.weight_total_bits or 0), has_bias=bias is not None)
    if isinstance(module, Conv2dAdder):
        if len(in_shape) != 4:
            raise ValueError(f"adder layer {name!r}: Conv2dAdder needs an (N, C, H, W) input, got {in_shape}")
        n, c, h, wd = in_shape
        o, cg, kh, kw = w.shape
        if c != cg * module.groups:
            raise ValueError(f"adder layer {name!r}: input has {c} channels, layer expects {cg * module.groups}")
        top, left, bottom, right = (int(p) for p in module.explicit_padding(h, wd))
        (sh, sw), (dh, dw) = module.stride, module.dilation
        oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
        info = AdderLayerInfo(kind="conv2d", in_shape=in_shape, out_shape=(n, o, oh, ow), strides=(sh, sw),
                              padding=(top, left, bottom, right), dilation=(dh, dw), groups=int(module.groups),
                              **common)
    else:
        n_out, k = w.shape
        if in_shape[-1] != k:
            raise ValueError(f"adder layer {name!r}: input has {in_shape[-1]} features, layer expects {k}")
        info = AdderLayerInfo(kind="dense", in_shape=in_shape, out_shape=in_shape[:-1] + (n_out,), **common)
    return AdderLayerData(info=info, weight=w, bias=bias)


def _fallback_spec(info: AdderLayerInfo):
    from schedules.adder import AdderSpec

    n, c, h, w = info.in_shape
    o, _, kh, kw = info.weight_shape
    return AdderSpec(n, c, h, w, o, kh, kw, info.strides, info.padding, info.dilation, info.groups,
                     frac_bits=info.frac_bits, acc_dtype="int64", w_dtype="int32")


def _make_composite(info: AdderLayerInfo, fallback_gv: relax.GlobalVar | None) -> relax.Function:
    float_mode = info.act_bits is None
    x_dtype = "float32" if float_mode else "int32"
    params = [relax.Var("x_q", relax.TensorType(info.in_shape, x_dtype)),
              relax.Var("w", relax.TensorType(info.weight_shape, "float32" if float_mode else "int32"))]
    if info.has_bias:
        params.append(relax.Var("bias", relax.TensorType((info.weight_shape[0],), "float32")))
    bb = relax.BlockBuilder()
    with bb.function("composite", params, attrs=info.to_attrs(), private=True):
        with bb.dataflow():
            x, w = params[ARG_X], params[ARG_W]
            o = info.weight_shape[0]
            if info.kind == "dense":
                scale = 1.0 if float_mode else 2.0 ** -info.frac_bits
                xf = bb.emit(relax.op.astype(x, "float32"))
                wf = bb.emit(relax.op.astype(w, "float32"))
                d = bb.emit(relax.op.subtract(relax.op.expand_dims(xf, -2), wf))
                s = bb.emit(relax.op.sum(relax.op.abs(d), axis=[-1]))
                y = bb.emit(relax.op.multiply(relax.op.negative(s), relax.const(scale, "float32")))
                if info.has_bias:
                    y = bb.emit(relax.op.add(y, params[ARG_BIAS]))
            else:
                bias = params[ARG_BIAS] if info.has_bias else relax.const(np.zeros(o, np.float32), "float32")
                y = bb.emit(relax.call_tir(fallback_gv, [x, w, bias], relax.TensorType(info.out_shape, "float32")))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()["composite"]


def emit_adder_layer(bb: relax.BlockBuilder, x: relax.Expr, name: str, module: nn.Module) -> tuple[relax.Expr, AdderLayerData]:
    """Emit one adder layer (quantise prologue + composite call) into the importer's builder."""
    from schedules.adder import adder_conv2d

    from .quantize import emit_quantize

    in_shape = tuple(int(d) for d in x.ty.shape)
    data = read_adder_layer(name, module, in_shape)
    info = data.info
    xq = x if info.act_bits is None else emit_quantize(bb, x, info.act_bits[0], info.act_bits[1], info.rounding)
    tag = re.sub(r"\W", "_", info.layer)
    fallback = None
    if info.kind == "conv2d":
        fallback = bb.add_func(adder_conv2d(_fallback_spec(info)), "adder_fallback_" + tag)
    gv = bb.add_func(_make_composite(info, fallback), "composite_adder_" + info.kind + "_" + tag)
    w = data.weight.astype(np.float32 if info.act_bits is None else np.int32)
    args = [xq, relax.const(w)]
    if data.bias is not None:
        args.append(relax.const(data.bias, "float32"))
    return bb.emit(relax.Call(gv, args)), data
