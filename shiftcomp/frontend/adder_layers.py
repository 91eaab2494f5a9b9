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

from passes.adder_contract import (ADDER_COMPOSITES, ARG_BIAS, ARG_W, ARG_X, COMPOSITE_ADDER_CONV2D,
                                   COMPOSITE_ADDER_DENSE, AdderLayerInfo, adder_composite_info)
from shiftcomp.adder import Conv2dAdder, LinearAdder

__all__ = ["COMPOSITE_ADDER_DENSE", "COMPOSITE_ADDER_CONV2D", "ADDER_COMPOSITES", "AdderLayerInfo",
           "AdderLayerData", "adder_layer_types", "is_adder_layer", "read_adder_layer", "adder_composite_info",
           "emit_adder_layer"]

def adder_layer_types() -> tuple[type, ...]:
    """The adder layer classes."""
    return (LinearAdder, Conv2dAdder)


def is_adder_layer(m: nn.Module) -> bool:
    """True for a shiftcomp adder layer."""
    return isinstance(m, adder_layer_types())


@dataclasses.dataclass(frozen=True)
class AdderLayerData:
    """One adder layer as imported: info, weights (``int64`` ``w_q``, or float32 in float mode), bias."""

    info: AdderLayerInfo
    weight: np.ndarray
    bias: np.ndarray | None


def read_adder_layer(name: str, module: nn.Module, in_shape: tuple[int, ...]) -> AdderLayerData:
    """Extract an adder layer's info, weights and bias for an input of shape ``in_shape``."""
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
