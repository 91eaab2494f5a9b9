"""The composite contract between the frontend and the passes: how a shift layer looks in Relax.

The frontend (``shiftcomp/frontend/composite.py``) emits, per shift layer, a call to a private Relax
function marked ``{"Composite": <name>, ...}``; the passes (``passes/lower_shift.py``) find those calls and
lower them. Both sides import the names, the argument order and :class:`ShiftLayerInfo` from here only.

    y = composite_<kind>_<layer>(x_q, shift, sign, w, [bias])      # argument order: ARG_X ... ARG_BIAS

``shift``/``sign`` are int8 constants (the exact integer weights), ``w`` the float32 ``sign * 2**shift``
(used by the float fallback body only), ``bias`` float32. To add a new composite (e.g. an adder layer),
add its name here and one entry to ``passes.lower_shift.LOWERINGS``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from tvm import relax

from .adder_contract import adder_composite_info

__all__ = ["COMPOSITE_DENSE", "COMPOSITE_CONV2D", "COMPOSITES", "ARG_X", "ARG_SHIFT", "ARG_SIGN", "ARG_WEIGHT",
           "ARG_BIAS", "ShiftLayerInfo", "composite_info"]

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
        s0: accumulator shift = smallest shift over nonzero weights (0 if none), see docs/numerics.md.
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
    """The :class:`ShiftLayerInfo` (shift) or :class:`~passes.adder_contract.AdderLayerInfo` (adder) of a
    Relax function if it is a shiftcomp composite, else ``None``."""
    if not isinstance(func, relax.Function) or func.attrs is None:
        return None
    if "Composite" not in func.attrs or str(func.attrs["Composite"]) not in COMPOSITES:
        return adder_composite_info(func)
    return ShiftLayerInfo.from_attrs(func.attrs)
