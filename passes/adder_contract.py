"""The adder-layer half of the composite contract (see ``passes/contract.py``): names, argument order and
:class:`AdderLayerInfo`, shared by the frontend (``shiftcomp/frontend/adder_layers.py``) and
``passes/lower_adder.py``.

    y = composite_adder_<kind>_<layer>(x_q, w, [bias])     # argument order: ARG_X, ARG_W, ARG_BIAS
"""
from __future__ import annotations

import dataclasses
from typing import Any

from tvm import relax

__all__ = ["COMPOSITE_ADDER_DENSE", "COMPOSITE_ADDER_CONV2D", "ADDER_COMPOSITES", "ARG_X", "ARG_W", "ARG_BIAS",
           "AdderLayerInfo", "adder_composite_info"]

COMPOSITE_ADDER_DENSE = "shiftcomp.adder_dense"      #: composite name of an adder linear layer
COMPOSITE_ADDER_CONV2D = "shiftcomp.adder_conv2d"    #: composite name of an adder conv2d layer
ADDER_COMPOSITES = (COMPOSITE_ADDER_DENSE, COMPOSITE_ADDER_CONV2D)

#: argument order of an adder composite call
ARG_X, ARG_W, ARG_BIAS = range(3)



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
    act_qmax = None  #: the format's own largest code (the quantise kernel reads it)

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
