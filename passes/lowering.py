"""What every lowering shares: the per-layer record, the report, the context a lowering function gets, and
the replacement of the frontend's quantise prologue by one quantise kernel.

Shift (``passes/lower_shift.py``) and adder (``passes/lower_adder.py``) lowerings both build on this module.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.target import Target

from .accumulator import AccumulatorPlan
from .contract import ShiftLayerInfo
from .errors import LoweringError
from .kernels import KernelBuild, KernelProvider, WeightInput
from .quantize_kernel import quantize_primfunc

__all__ = ["LoweredLayer", "LoweringReport", "LowerContext", "const_array", "quantize_input", "quantize_source"]


@dataclasses.dataclass
class LoweredLayer:
    """One lowered shift layer.

    Attributes:
        info: the composite's layer info.
        spec: the kernel spec (``schedules.compute.DenseSpec`` / ``Conv2dSpec``).
        plan: accumulator plan (``None`` for float activations).
        kernel: name of the kernel's GlobalVar in the lowered module.
        codes: the default int8 weight codes in the default kernels' layout.
        float_acts: whether the float-activation (exponent-add) kernel was used.
        weights: the kernel's constant inputs after ``x`` (from the provider; default: ``codes``).
        prologue: name of the provider's prologue kernel on ``x`` (``None``: none).
        prologue_quantizes: the prologue is the provider's ``prologue_float``: it reads the float input
            (reshaped to ``spec.x_shape``) and quantises it; there is no separate quantise kernel.
        source: where the kernel came from (``"manual"`` or ``"database"``).
        task_name: the kernel's tuning task name.
        build: the provider's :class:`~passes.kernels.KernelBuild` (``shiftcomp.tune`` reads its tuning key).
        logical_codes: the codes the artifact stores and derived inputs are rebuilt from (PyTorch weight
            layout, int8): ``sign * (shift - s0 + 1)`` for a shift layer, ``w_q`` for an adder layer with
            ``weight_bits <= 8``; ``None`` when the layer's weights stay library constants.
    """

    info: ShiftLayerInfo
    spec: Any
    plan: AccumulatorPlan | None
    kernel: str
    codes: np.ndarray
    float_acts: bool = False
    weights: tuple[WeightInput, ...] = ()
    prologue: str | None = None
    prologue_quantizes: bool = False
    source: str = "manual"
    task_name: str = ""
    build: KernelBuild | None = None
    logical_codes: np.ndarray | None = None


@dataclasses.dataclass
class LoweringReport:
    """What :class:`LowerShiftOps` did, by layer name (filled in while the pass runs)."""

    layers: dict[str, LoweredLayer] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LowerContext:
    """What a lowering function gets: the builder, the target and the function's bindings."""

    builder: relax.BlockBuilder
    target: Target
    lookup: Callable[[relax.Var], relax.Expr | None]
    report: LoweringReport
    kernels: KernelProvider


def const_array(e: relax.Expr, what: str, layer: str) -> np.ndarray:
    if not isinstance(e, tvm.ir.expr.Constant):
        raise LoweringError(f"layer {layer!r}: {what} must be a constant to be lowered, got {type(e).__name__}")
    return e.value.numpy()


def quantize_source(ctx: LowerContext, x: relax.Expr, info: ShiftLayerInfo) -> relax.Expr | None:
    """The float input of the frontend's quantise chain feeding ``x`` (``None``: float activations, or ``x``
    is not produced by that chain)."""
    if info.act_bits is None:
        return None
    return _match_prologue(ctx, x)


def quantize_input(ctx: LowerContext, x: relax.Expr, info: ShiftLayerInfo) -> relax.Expr:
    """Replace the frontend's plain-Relax prologue chain feeding ``x`` by one quantize kernel, if present."""
    chain = quantize_source(ctx, x, info)
    if chain is None:
        return x
    prim = quantize_primfunc(info.in_shape, info.act_bits[0], info.act_bits[1], info.rounding, qmax=info.act_qmax)
    prim = prim.with_attr("shiftcomp.layer", info.layer)
    gv = ctx.builder.add_func(prim, "shiftcomp_quantize")
    return ctx.builder.emit(relax.call_tir(gv, [chain], relax.TensorType(info.in_shape, "int32")))


def _op_name(e: relax.Expr) -> str | None:
    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
        return str(e.op.name)
    return None


_PROLOGUE_CHAINS = (  # op names walking back from x_q to the multiply (frontend/quantize.py)
    ("relax.astype", "relax.clip", "{round}", "relax.multiply"),
    ("relax.astype", "relax.minimum", "relax.astype", "relax.clip", "{round}", "relax.multiply"),
)


def _match_prologue(ctx: LowerContext, x: relax.Expr) -> relax.Expr | None:
    """The float input of the frontend's quantise chain ending in ``x``, or ``None`` if ``x`` is not one."""
    e, names = x, []
    for _ in range(6):
        val = ctx.lookup(e) if isinstance(e, relax.Var) else None
        name = _op_name(val)
        if name is None:
            return None
        names.append("{round}" if name in ("relax.round", "relax.floor") else name)
        if name == "relax.multiply":
            return val.args[0] if tuple(names) in _PROLOGUE_CHAINS else None
        e = val.args[0]
    return None
