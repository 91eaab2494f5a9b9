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

import dataclasses
from typing import Any

from tvm import relax

__all__ = ["COMPOSITE_DENSE", "COMPOSITE_CONV2D", "COMPOSITES", "ShiftLayerInfo", "make_composite_function",
           "composite_info"]

COMPOSITE_DENSE = "shiftcomp.shift_dense"      #: composite name of a shift linear layer
COMPOSITE_CONV2D = "shiftcomp.shift_conv2d"    #: composite name of a shift conv2d layer
COMPOSITES = (COMPOSITE_DENSE, COMPOSITE_CONV2D)

#: argument order of a composite function / call
ARG_X, ARG_SHIFT, ARG_SIGN, ARG_WEIGHT, ARG_BIAS = range(5)


@dataclasses.dataclass(frozen=True)
class ShiftLayerInfo:
    """Everything the passes need to know about one shift layer (stored as function attributes).

    Attributes:
        layer: module path in the model (e.g. ``"layer1.0.conv1"``).
        kind: ``"dense"`` or ``"conv2d"``.
        in_shape: input shape (``(..., K)`` for dense, ``(N, C, H, W)`` for conv2d).
        out_shape: output shape.
        weight_shape: ``(N, K)`` or ``(O, C // groups, KH, KW)``.
        act_bits: ``(I, F)`` fixed-point activation format, or ``None`` (float activations).
        rounding: activation rounding, ``"nearest"`` (ties to even) or ``"floor"``.
        mode: ``"Q"`` or ``"PS"``.
        weight_bits: the config's weight bits (2..8).
        shift_range: resolved ``(lo, hi)`` shift bounds of the config.
        s0: accumulator shift = smallest shift over nonzero weights (0 if none), ``reference.acc_shift``.
        strides, padding (top, left, bottom, right), dilation, groups: conv2d geometry (dense: defaults).
        has_bias: whether the layer has a bias.
        act_qmax: largest activation code when it is not ``2**(I+F-1) - 1`` (``numerics="deepshift"``:
            ``2**(I+F-1) - 2**F``), else ``None``.
    """

    layer: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    act_bits: tuple[int, int] | None
    rounding: str
    mode: str
    weight_bits: int
    shift_range: tuple[int, int]
    s0: int
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    has_bias: bool = False
    act_qmax: int | None = None

    @property
    def composite(self) -> str:
        """The composite name (``COMPOSITE_DENSE`` or ``COMPOSITE_CONV2D``)."""
        return COMPOSITE_DENSE if self.kind == "dense" else COMPOSITE_CONV2D

    @property
    def int_bits(self) -> int | None:
        """``I`` of the activation format (``None`` for float activations)."""
        return None if self.act_bits is None else self.act_bits[0]

    @property
    def frac_bits(self) -> int | None:
        """``F`` of the activation format (``None`` for float activations)."""
        return None if self.act_bits is None else self.act_bits[1]

    def to_attrs(self) -> dict[str, Any]:
        """Function attributes (TVM-serialisable: ints, strings, int lists). Float acts: I = F = -1."""
        i_bits, f_bits = self.act_bits if self.act_bits is not None else (-1, -1)
        return {
            "Composite": self.composite, "layer": self.layer, "kind": self.kind,
            "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
            "weight_shape": list(self.weight_shape),
            "int_bits": i_bits, "frac_bits": f_bits, "act_float": int(self.act_bits is None),
            "rounding": self.rounding, "mode": self.mode, "weight_bits": self.weight_bits,
            "shift_lo": self.shift_range[0], "shift_hi": self.shift_range[1], "s0": self.s0,
            "strides": list(self.strides), "padding": list(self.padding), "dilation": list(self.dilation),
            "groups": self.groups, "has_bias": int(self.has_bias),
            "act_qmax": -1 if self.act_qmax is None else int(self.act_qmax),
        }

    @classmethod
    def from_attrs(cls, attrs: Any) -> "ShiftLayerInfo":
        """Inverse of :meth:`to_attrs` (accepts a TVM ``DictAttrs`` or a dict)."""
        a = {str(k): attrs[k] for k in attrs.keys()}
        ints = lambda v: tuple(int(x) for x in v)  # noqa: E731
        act = None if int(a["act_float"]) else (int(a["int_bits"]), int(a["frac_bits"]))
        return cls(
            layer=str(a["layer"]), kind=str(a["kind"]), in_shape=ints(a["in_shape"]),
            out_shape=ints(a["out_shape"]), weight_shape=ints(a["weight_shape"]), act_bits=act,
            rounding=str(a["rounding"]), mode=str(a["mode"]), weight_bits=int(a["weight_bits"]),
            shift_range=(int(a["shift_lo"]), int(a["shift_hi"])), s0=int(a["s0"]),
            strides=ints(a["strides"]), padding=ints(a["padding"]), dilation=ints(a["dilation"]),
            groups=int(a["groups"]), has_bias=bool(int(a["has_bias"])),
            act_qmax=None if int(a.get("act_qmax", -1)) < 0 else int(a["act_qmax"]),
        )


def composite_info(func: Any) -> ShiftLayerInfo | None:
    """The :class:`ShiftLayerInfo` (shift) or ``AdderLayerInfo`` (adder) of a Relax function if it is a
    shiftcomp composite, else ``None``."""
    if not isinstance(func, relax.Function) or func.attrs is None:
        return None
    if "Composite" not in func.attrs or str(func.attrs["Composite"]) not in COMPOSITES:
        from .adder_layers import adder_composite_info   # adder composites (AdderLayerInfo)

        return adder_composite_info(func)
    return ShiftLayerInfo.from_attrs(func.attrs)


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
