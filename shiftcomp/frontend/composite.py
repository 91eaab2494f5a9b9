"""Shift ops in Relax: marked ("composite") private functions with a plain-Relax fallback body.

Each shift layer is imported as

    x_q = <quantise prologue>(x)                          # plain Relax ops (quantize.py); absent for float acts
    y   = composite_<kind>_<layer>(x_q, shift, sign, w, [bias])   # a call to a private Relax function

where ``shift``/``sign`` (int8, the layer's exact integer weights), ``w`` (float32 ``sign * 2**shift``)
and ``bias`` (float32) are constants, and the callee carries the attributes of :class:`ShiftLayerInfo`
(``{"Composite": "shiftcomp.shift_conv2d", "layer": ..., "frac_bits": ..., ...}``).

The callee's body is a *float* fallback: ``conv2d/linear(float32(x_q) * 2**-F, w) + bias``. The module
therefore runs as imported -- and that unlowered module is the float multiply baseline (one import, two
builds). ``passes/lower_shift.py`` replaces the calls by ``call_tir`` of the shift kernels and reads
the integer weights from the call's constant arguments.
"""
from __future__ import annotations

from tvm import relax

from passes.contract import (ARG_BIAS, ARG_SHIFT, ARG_SIGN, ARG_WEIGHT, ARG_X, COMPOSITE_CONV2D, COMPOSITE_DENSE,
                             COMPOSITES, ShiftLayerInfo, composite_info)

__all__ = ["COMPOSITE_DENSE", "COMPOSITE_CONV2D", "COMPOSITES", "ARG_X", "ARG_SHIFT", "ARG_SIGN", "ARG_WEIGHT",
           "ARG_BIAS", "ShiftLayerInfo", "make_composite_function", "composite_info"]


def make_composite_function(info: ShiftLayerInfo) -> relax.Function:
    """Build the private composite function of one shift layer (float fallback body, see module doc).

    Parameters: ``x_q`` (int32, or float32 for float activations, shape ``info.in_shape``), ``shift`` and
    ``sign`` (int8, ``info.weight_shape``), ``w`` (float32 ``sign * 2**shift``), and ``bias`` (float32,
    ``(out_channels,)``) when ``info.has_bias``. Returns float32 of shape ``info.out_shape``.
    """
    x_dtype = "float32" if info.act_bits is None else "int32"
    params = [
        relax.Var("x_q", relax.TensorType(info.in_shape, x_dtype)),
        relax.Var("shift", relax.TensorType(info.weight_shape, "int8")),
        relax.Var("sign", relax.TensorType(info.weight_shape, "int8")),
        relax.Var("w", relax.TensorType(info.weight_shape, "float32")),
    ]
    if info.has_bias:
        params.append(relax.Var("bias", relax.TensorType((info.weight_shape[0],), "float32")))
    bb = relax.BlockBuilder()
    with bb.function("composite", params, attrs=info.to_attrs(), private=True):
        with bb.dataflow():
            x = params[ARG_X]
            if info.act_bits is not None:
                x = bb.emit(relax.op.astype(x, "float32"))
                x = bb.emit(relax.op.multiply(x, relax.const(2.0 ** -info.frac_bits, "float32")))
            w = params[ARG_WEIGHT]
            bias = params[ARG_BIAS] if info.has_bias else None
            if info.kind == "dense":
                y = bb.emit(relax.op.linear(x, w, bias, "float32"))
            else:
                y = bb.emit(relax.op.nn.conv2d(
                    x, w, strides=info.strides, padding=info.padding, dilation=info.dilation,
                    groups=info.groups, data_layout="NCHW", kernel_layout="OIHW", out_dtype="float32"))
                if bias is not None:
                    y = bb.emit(relax.op.add(y, relax.op.reshape(bias, (1, -1, 1, 1))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()["composite"]
