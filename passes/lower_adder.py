"""Lowering of adder composites (AdderNet layers) to ``call_tir`` of multiplication-free adder kernels.

Entries of the ``LOWERINGS`` table of :mod:`passes.lower_shift`::

    composite_adder_<kind>_<layer>(x_q, w, [bias])
      ->  y = R.call_tir(adder_<kind>_<layer>, (x_q, w_kernel, bias), out f32)    # schedules.adder

* The fixed-point weights ``w_q`` are read from the call's constant argument; the accumulator dtype follows
  from the proven bound ``max_o Σ_k (2**(I+F-1) + |w_q[o,k]|)``: int32 below ``2**31``, int64 below
  ``2**63``, else :class:`~shiftcomp.errors.AccumulatorOverflowError` naming the layer.
* The frontend's quantise prologue feeding ``x_q`` becomes one quantize kernel, as for shift layers.
* A dense layer ``(M, K)`` runs as the 1x1 convolution of the image ``(1, K, 1, M)`` (reshape/transpose
  around the kernel); a layer without bias gets a zero bias constant (one kernel signature).
* x86: 8-bit operands use the ``vpsadbw`` kernel (any stride; grouped convs with at least 8 channels per
  group, ``schedules.adder.psadbw_preferred``; weights packed as uint64 per channel block and tap), except a
  dense layer with fewer than 8 rows (its pixel lanes would idle); everything else the plain sub/abs/add
  kernel. CUDA: 8-bit operands use ``__vsadu4`` (4 byte differences per instruction), else the plain
  kernel. ``SHIFTCOMP_ADDER_KERNEL=plain`` forces the plain one.
* Kernel PrimFuncs carry ``{"shiftcomp.role": "adder", "shiftcomp.layer", "shiftcomp.kind",
  "shiftcomp.acc_dtype", "shiftcomp.variant", "shiftcomp.weight_inputs"}``; the multiplication audit counts
  their data path like the shift kernels'.
* Weights of ``weight_bits <= 8`` layers: the kernel's weight array is a derived input of the layer's
  ``w_q`` (:mod:`passes.adder_weights`, ``shiftcomp.weight_inputs = [<variant>]``), so ``LiftShiftWeights``
  lifts it into a parameter of ``main`` and the artifact stores ``w_q`` bit-packed. Wider fixed-point and
  float-mode weights stay constants of the compiled library (``shiftcomp.weight_inputs = []``).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import tvm
from tvm import relax

from schedules.adder import AdderSpec, build_adder_kernel, weight_dtype

from .accumulator import INT32_LIMIT, INT64_LIMIT, AccumulatorPlan
from .adder_contract import ARG_BIAS, ARG_W, ARG_X, AdderLayerInfo
from .adder_weights import packable, weight_derivation
from .errors import AccumulatorOverflowError, LoweringError
from .kernel_build import WeightInput
from .lowering import LoweredLayer, quantize_input

__all__ = ["lower_adder_dense", "lower_adder_conv2d", "ADDER_ROLE", "adder_plan"]

ADDER_ROLE = "adder"
_OPAQUE = 8  # relax OpPatternKind.kOpaque


def adder_accumulator_bound(w_q: np.ndarray, x_absmax: int) -> int:
    """Proven bound on ``|acc|``: ``max_o Σ_k (x_absmax + |w_q[o,k]|)``, in exact Python integers (a padded
    term ``|0 - w|`` is below ``x_absmax + |w|``, so padding is covered). Equal to
    ``shiftcomp.reference.adder_accumulator_bound`` (a test checks it)."""
    rows = np.asarray(w_q, dtype=np.int64).reshape(len(w_q), -1)
    if rows.size == 0:
        return 0
    return max(sum(abs(int(v)) for v in r) for r in rows.tolist()) + rows.shape[1] * int(x_absmax)


def adder_plan(info: AdderLayerInfo, w_q: np.ndarray):
    """The :class:`passes.accumulator.AccumulatorPlan` of a fixed-point adder layer (see module doc)."""
    x_absmax = 2 ** (info.act_bits[0] + info.act_bits[1] - 1)
    bound = adder_accumulator_bound(w_q, x_absmax)
    if bound >= INT64_LIMIT:
        raise AccumulatorOverflowError(info.layer, bound)
    dtype = "int32" if bound < INT32_LIMIT else "int64"
    return AccumulatorPlan(layer=info.layer, dtype=dtype, bound=bound, x_absmax=x_absmax, s0=0)


def _weights(call: relax.Call, info: AdderLayerInfo) -> np.ndarray:
    e = call.args[ARG_W]
    if not isinstance(e, tvm.ir.expr.Constant):
        raise LoweringError(f"adder layer {info.layer!r}: the weights must be a constant to be lowered")
    return e.value.numpy()


def _emit(ctx: Any, call: relax.Call, info: AdderLayerInfo, spec: Any, x: relax.Expr, w: np.ndarray,
          plan: Any, prefer_plain: bool) -> relax.Expr:
    choice = os.environ.get("SHIFTCOMP_ADDER_KERNEL", "auto")
    if choice not in ("auto", "plain", "psadbw", "vsadu4"):
        raise LoweringError(f"SHIFTCOMP_ADDER_KERNEL must be auto, plain, psadbw or vsadu4, got {choice!r}")
    if prefer_plain and choice == "auto":
        choice = "plain"
    prim, variant = build_adder_kernel(spec, ctx.target, choice)
    logical = None
    weights: tuple[WeightInput, ...] = ()
    if packable(spec.w_bits, spec.float_mode):   # the vpsadbw / __vsadu4 kernels only serve this case
        logical = np.ascontiguousarray(w.reshape(info.weight_shape).astype(np.int8))
        if not np.array_equal(logical, w.reshape(info.weight_shape)):
            raise LoweringError(f"adder layer {info.layer!r}: weights outside the {spec.w_bits}-bit range")
        name, how = weight_derivation(variant)
        wk = how.apply(logical)
        weights = (WeightInput(name, wk, how),)
    elif spec.float_mode:
        wk = w.astype(np.float32)
    else:
        wk = w.astype(weight_dtype(spec.w_bits))
    acc = "float32" if plan is None else plan.dtype
    kind = "adder_" + info.kind
    for k, v in {"shiftcomp.role": ADDER_ROLE, "shiftcomp.layer": info.layer, "shiftcomp.kind": kind,
                 "shiftcomp.acc_dtype": acc, "shiftcomp.variant": variant, "op_pattern": _OPAQUE,
                 "shiftcomp.weight_inputs": [wi.name for wi in weights]}.items():
        prim = prim.with_attr(k, v)
    if ctx.target.kind.name != "llvm":
        prim = prim.with_attr("tirx.is_scheduled", True)
    gv = ctx.builder.add_func(prim, kind + "_" + "".join(c if c.isalnum() else "_" for c in info.layer))
    bias = call.args[ARG_BIAS] if info.has_bias else relax.const(np.zeros(spec.out_channels, np.float32))
    y = ctx.builder.emit(relax.call_tir(gv, [x, relax.const(wk), bias],
                                        relax.TensorType(spec.out_shape, "float32")))
    ctx.report.layers[info.layer] = LoweredLayer(info=info, spec=spec, plan=plan, kernel=gv.name_hint, codes=wk,
                                                 float_acts=plan is None, weights=weights, logical_codes=logical)
    return y


def _spec(info: AdderLayerInfo, in_nchw: tuple[int, ...], geometry: dict, plan: Any):
    n, c, h, w = in_nchw
    o = info.weight_shape[0]
    kh, kw = (info.weight_shape[2], info.weight_shape[3]) if info.kind == "conv2d" else (1, 1)
    x_bits = 32 if info.act_bits is None else sum(info.act_bits)
    w_bits = 32 if info.act_bits is None else info.weight_bits
    return AdderSpec(n, c, h, w, o, kh, kw, frac_bits=info.frac_bits, acc_dtype=plan.dtype if plan else "int32",
                     x_bits=x_bits, w_bits=w_bits, w_dtype=weight_dtype(w_bits), **geometry)


def _input(ctx: Any, call: relax.Call, info: AdderLayerInfo) -> relax.Expr:
    return quantize_input(ctx, call.args[ARG_X], info)


def lower_adder_conv2d(ctx: Any, call: relax.Call, info: AdderLayerInfo) -> relax.Expr:
    """Lower one ``shiftcomp.adder_conv2d`` call (see module doc)."""
    w = _weights(call, info)
    plan = None if info.act_bits is None else adder_plan(info, w)
    spec = _spec(info, info.in_shape, dict(stride=info.strides, padding=info.padding, dilation=info.dilation,
                                           groups=info.groups), plan)
    return _emit(ctx, call, info, spec, _input(ctx, call, info), w, plan, prefer_plain=False)


def lower_adder_dense(ctx: Any, call: relax.Call, info: AdderLayerInfo) -> relax.Expr:
    """Lower one ``shiftcomp.adder_dense`` call: the 1x1 conv of the ``(1, K, 1, M)`` image (module doc)."""
    w = _weights(call, info)
    plan = None if info.act_bits is None else adder_plan(info, w)
    n_out, k = info.weight_shape
    m = int(np.prod(info.in_shape[:-1], dtype=np.int64)) if len(info.in_shape) > 1 else 1
    spec = _spec(info, (1, k, 1, m), {}, plan)
    b = ctx.builder
    x = _input(ctx, call, info)
    x = b.emit(relax.op.reshape(x, (m, k)))
    x = b.emit(relax.op.reshape(relax.op.permute_dims(x, [1, 0]), (1, k, 1, m)))
    y = _emit(ctx, call, info, spec, x, w.reshape(n_out, k, 1, 1), plan, prefer_plain=m < 8)
    y = b.emit(relax.op.permute_dims(relax.op.reshape(y, (n_out, m)), [1, 0]))
    if tuple(info.out_shape) != (m, n_out):
        y = b.emit(relax.op.reshape(y, info.out_shape))
    return y
