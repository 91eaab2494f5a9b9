"""LowerShiftOps: replace calls to shift composites by ``call_tir`` of multiplication-free shift kernels.

Declarative, tinygrad style: :data:`LOWERINGS` maps a composite name to the function that lowers one call.

    composite_<kind>_<layer>(x_q, shift, sign, w, [bias])    # composite call (frontend)
      ->  codes = <kind>_weight_codes(shift, sign, s0)        # int8 constant in the kernel's layout
          y     = R.call_tir(shift_<kind>_<layer>, (x_q, codes, [bias]), out f32)   # from the kernel provider

* The integer weights are read from the call's constant arguments (never from the float ``w``).
* The accumulator dtype comes from :func:`passes.accumulator.plan_accumulator` (int32 / int64 / error).
* If ``x_q`` is produced by the frontend's plain-Relax quantise prologue, that chain is replaced by one
  ``shiftcomp_quantize`` kernel (:mod:`passes.quantize_kernel`); the old bindings die in the DCE that follows.
  A provider whose kernel has a prologue may also give a ``prologue_float`` that quantises as it packs: it
  then reads the chain's float input directly (no quantise kernel, no int32 ``x_q`` tensor).
* Dense inputs with more than two dims are reshaped to ``(M, K)`` and back.
* Float-activation layers use the exponent-add kernels (``shift_dense_float``/``shift_conv2d_float``) when
  the schedules provide them; otherwise lowering raises :class:`LoweringError` -- never a silent multiply.
* Kernels come from a kernel provider passed in (:mod:`passes.kernels`; default: the manual schedules);
  a provider may return extra constant inputs (derived from the codes) and a prologue kernel on ``x``.
* Kernel PrimFuncs carry ``{"shiftcomp.role": "shift", "shiftcomp.layer", "shiftcomp.kind",
  "shiftcomp.acc_dtype", "shiftcomp.weight_inputs"}`` (for the audit and weight lifting) and ``op_pattern = kOpaque`` so FuseOps leaves the scheduled
  kernels alone; on GPU targets also ``tirx.is_scheduled`` so DLight's default rules leave them alone.

Results of a run (one :class:`LoweredLayer` per layer: spec, accumulator plan, kernel name, codes) are
collected in a :class:`LoweringReport` you pass in.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.target import Target

from schedules.compute import (Conv2dSpec, DenseSpec, conv2d_weight_codes, dense_weight_codes,
                                weight_codes)

from .accumulator import AccumulatorPlan, plan_accumulator
from .contract import (ARG_BIAS, ARG_SHIFT, ARG_SIGN, ARG_X, COMPOSITE_CONV2D, COMPOSITE_DENSE, ShiftLayerInfo,
                       composite_info)
from .errors import LoweringError, ShiftCompError
from .kernels import KernelBuild, KernelProvider, KernelRequest, ManualKernels, WeightInput
from .lower_adder import lower_adder_conv2d, lower_adder_dense
from .lowering import LowerContext, LoweredLayer, LoweringReport, const_array, quantize_input, quantize_source
from .quantize_kernel import ROLE_ATTR, quantize_primfunc

__all__ = ["LOWERINGS", "LowerShiftOps", "LoweringReport", "LoweredLayer", "lower_shift_ops",
           "OP_PATTERN_OPAQUE", "pop_pending_error"]

OP_PATTERN_OPAQUE = 8  #: relax OpPatternKind.kOpaque: FuseOps never fuses such a call_tir
_PENDING = threading.local()  # a ShiftCompError raised inside TVM's FFI (see pop_pending_error)


# ---------------------------------------------------------------------------------------------- kernels
def _kernel_attrs(prim: tvm.tirx.PrimFunc, attrs: dict[str, Any], target: Target) -> tvm.tirx.PrimFunc:
    prim = prim.without_attr("global_symbol")
    for k, v in {**attrs, "op_pattern": OP_PATTERN_OPAQUE}.items():
        prim = prim.with_attr(k, v)
    if target.kind.name != "llvm":  # GPU: already thread-bound; keep DLight's default rules off it
        prim = prim.with_attr("tirx.is_scheduled", True)
    return prim


def _request_kernel(ctx: LowerContext, req: KernelRequest, kind: str) -> KernelBuild:
    """The provider's kernel; a float-activation layer without float kernels is a LoweringError."""
    try:
        return ctx.kernels.kernel(req)
    except LoweringError:
        raise
    except Exception as e:  # noqa: BLE001
        if req.info.act_bits is None:
            raise LoweringError(
                f"shift layer {req.info.layer!r} has float activations (act_bits=None) and the kernel provider "
                f"cannot build a float-activation (exponent-add) {kind} kernel ({type(e).__name__}: {e}); "
                f"set ShiftConfig.act_bits (fixed point) to compile it without multiplies") from e
        raise


def _emit_kernel(ctx: LowerContext, call: relax.Call, info: ShiftLayerInfo, kind: str, spec: Any,
                 codes: np.ndarray, plan: AccumulatorPlan | None) -> relax.Expr:
    """The kernel call on the composite's ``x_q``: quantise kernel (replacing the frontend's chain), provider
    prologue, kernel -- or, when the provider has a ``prologue_float`` and ``x_q`` comes from the chain, that
    prologue on the chain's float input (one kernel quantising and packing; no int32 ``x_q`` tensor)."""
    float_acts = info.act_bits is None
    kkind = kind + ("_float" if float_acts else "")
    shift, sign = _weights(call, info)
    req = KernelRequest(kind=kkind, spec=spec, info=info, shift=shift, sign=sign, codes=codes,
                        logical_codes=weight_codes(shift, sign, info.s0), target=ctx.target)
    build = _request_kernel(ctx, req, kind)
    layer_id = "".join(c if c.isalnum() else "_" for c in info.layer)
    acc = "float32" if plan is None else plan.dtype
    prologue_name = None
    x_shape = tuple(int(d) for d in spec.x_shape)
    x_float = quantize_source(ctx, call.args[ARG_X], info) if build.prologue_float is not None else None
    if x_float is None:
        x = quantize_input(ctx, call.args[ARG_X], info)
    else:
        x = x_float
    if tuple(info.in_shape) != x_shape:   # dense inputs with more than two dims
        x = ctx.builder.emit(relax.op.reshape(x, x_shape))
    if build.prologue is not None:
        if build.prologue_out is None:
            raise LoweringError(f"shift layer {info.layer!r}: the kernel provider gave a prologue without prologue_out")
        # the quantising prologue does the quantise kernel's job: the audit counts its x * 2**F as a prologue
        # multiply (role "prologue"), and sc.verify finds it as the layer's quantise step
        pro_prim, role = ((build.prologue_float, "prologue") if x_float is not None
                          else (build.prologue, "kernel_prologue"))
        # hand-written like the main kernel: MetaSchedule must not take it for glue to tune (it cannot even
        # estimate the FLOPs of its vector loops)
        pro = _kernel_attrs(pro_prim, {ROLE_ATTR: role, "shiftcomp.layer": info.layer, "tirx.is_scheduled": True},
                            ctx.target)
        pgv = ctx.builder.add_func(pro, "shift_prologue_" + layer_id)
        prologue_name = pgv.name_hint
        shape, dtype = build.prologue_out
        x = ctx.builder.emit(relax.call_tir(pgv, [x], relax.TensorType(tuple(shape), dtype)))
    prim = _kernel_attrs(build.main, {ROLE_ATTR: "shift", "shiftcomp.layer": info.layer, "shiftcomp.kind": kkind,
                                      "shiftcomp.acc_dtype": acc,
                                      "shiftcomp.weight_inputs": [w.name for w in build.weights]}, ctx.target)
    gv = ctx.builder.add_func(prim, "shift_" + kind + "_" + layer_id)
    args = [x] + [relax.const(np.ascontiguousarray(w.array)) for w in build.weights]
    if info.has_bias:
        args.append(call.args[ARG_BIAS])
    out_shape = tuple(int(d) for d in spec.out_shape)
    y = ctx.builder.emit(relax.call_tir(gv, args, relax.TensorType(out_shape, "float32")))
    ctx.report.layers[info.layer] = LoweredLayer(info=info, spec=spec, plan=plan, kernel=gv.name_hint, codes=codes,
                                                 float_acts=float_acts, weights=tuple(build.weights),
                                                 prologue=prologue_name, prologue_quantizes=x_float is not None,
                                                 source=build.source, task_name=build.task_name, build=build,
                                                 logical_codes=req.logical_codes)
    return y


def _codes(fn: Callable[..., np.ndarray], info: ShiftLayerInfo, *args: Any) -> np.ndarray:
    """Kernel weight codes, a ValueError of the code helpers turned into a LoweringError naming the layer."""
    try:
        return fn(*args)
    except ValueError as e:
        raise LoweringError(f"shift layer {info.layer!r}: its weights cannot be encoded as int8 kernel codes "
                            f"sign*(shift-s0+1): {e}") from e


def _weights(call: relax.Call, info: ShiftLayerInfo) -> tuple[np.ndarray, np.ndarray]:
    shift = const_array(call.args[ARG_SHIFT], "shift", info.layer).astype(np.int8)
    sign = const_array(call.args[ARG_SIGN], "sign", info.layer).astype(np.int8)
    return shift, sign


def _plan(info: ShiftLayerInfo, shift: np.ndarray, sign: np.ndarray) -> AccumulatorPlan | None:
    if info.act_bits is None:
        return None
    return plan_accumulator(info.layer, shift, sign, info.act_bits, info.s0)


# ---------------------------------------------------------------------------------------------- lowerings
def lower_dense(ctx: LowerContext, call: relax.Call, info: ShiftLayerInfo) -> relax.Expr:
    """Lower one ``shiftcomp.shift_dense`` call (see module doc)."""
    shift, sign = _weights(call, info)
    plan = _plan(info, shift, sign)
    n_out, k = info.weight_shape
    m = int(np.prod(info.in_shape[:-1], dtype=np.int64)) if len(info.in_shape) > 1 else 1
    spec = DenseSpec(batch=m, in_features=k, out_features=n_out, frac_bits=info.frac_bits or 0, s0=info.s0,
                     acc_dtype=plan.dtype if plan else "int32", has_bias=info.has_bias)
    codes = _codes(dense_weight_codes, info, shift, sign, info.s0)
    y = _emit_kernel(ctx, call, info, "dense", spec, codes, plan)
    if tuple(info.out_shape) != (m, n_out):
        y = ctx.builder.emit(relax.op.reshape(y, info.out_shape))
    return y


def lower_conv2d(ctx: LowerContext, call: relax.Call, info: ShiftLayerInfo) -> relax.Expr:
    """Lower one ``shiftcomp.shift_conv2d`` call (see module doc)."""
    shift, sign = _weights(call, info)
    plan = _plan(info, shift, sign)
    n, c, h, w = info.in_shape
    o, _, kh, kw = info.weight_shape
    spec = Conv2dSpec(batch=n, in_channels=c, height=h, width=w, out_channels=o, kernel_h=kh, kernel_w=kw,
                      stride=info.strides, padding=info.padding, dilation=info.dilation, groups=info.groups,
                      frac_bits=info.frac_bits or 0, s0=info.s0, acc_dtype=plan.dtype if plan else "int32",
                      has_bias=info.has_bias)
    codes = _codes(conv2d_weight_codes, info, shift, sign, info.s0, info.groups)
    return _emit_kernel(ctx, call, info, "conv2d", spec, codes, plan)


#: composite name -> lowering function (the pattern table)
LOWERINGS: dict[str, Callable[[LowerContext, relax.Call, ShiftLayerInfo], relax.Expr]] = {
    COMPOSITE_DENSE: lower_dense,
    COMPOSITE_CONV2D: lower_conv2d,
    "shiftcomp.adder_dense": lower_adder_dense,
    "shiftcomp.adder_conv2d": lower_adder_conv2d,
}


# ---------------------------------------------------------------------------------------------- the pass
@relax.expr_functor.mutator
class _Lowerer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, target: Target, report: LoweringReport, kernels: KernelProvider) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.ctx = LowerContext(self.builder_, target, self._lookup, report, kernels)

    def _lookup(self, var: relax.Var) -> relax.Expr | None:
        try:
            return self.lookup_binding(var)
        except Exception:  # noqa: BLE001
            return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if not isinstance(call.op, tvm.ir.GlobalVar):
            return call
        info = composite_info(self.mod_[call.op]) if call.op in self.mod_.get_global_vars() else None
        if info is None:
            return call
        fn = LOWERINGS.get(info.composite)
        try:
            if fn is None:
                raise LoweringError(f"no lowering registered for composite {info.composite!r} ({info.layer!r})")
            return fn(self.ctx, call, info)
        except ShiftCompError as e:  # crosses TVM's FFI as a RuntimeError: keep the original
            _PENDING.error = e
            raise

    def run(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function) and composite_info(func) is None:
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()


def lower_shift_ops(mod: tvm.IRModule, target: Target, report: LoweringReport | None = None, *,
                    kernels: KernelProvider | None = None) -> tvm.IRModule:
    """Lower every shift composite call in ``mod`` (the composites themselves stay until DCE).

    ``kernels``: the kernel provider (default :class:`passes.kernels.ManualKernels`).

    Raises the :class:`ShiftCompError` of a failing lowering (e.g. AccumulatorOverflowError) as is.
    """
    pop_pending_error()
    try:
        return _Lowerer(mod, target, report if report is not None else LoweringReport(),
                        kernels if kernels is not None else ManualKernels()).run()
    except ShiftCompError:
        raise
    except Exception:
        err = pop_pending_error()
        if err is not None:
            raise err from None
        raise


def pop_pending_error() -> ShiftCompError | None:
    """The ShiftCompError a shiftcomp pass raised inside TVM's pass machinery (which re-raises every
    Python exception as a plain RuntimeError), or None; cleared by the call."""
    err = getattr(_PENDING, "error", None)
    _PENDING.error = None
    return err


def LowerShiftOps(target: Target, report: LoweringReport | None = None, *,  # noqa: N802
                  kernels: KernelProvider | None = None) -> tvm.transform.Pass:
    """The module pass form of :func:`lower_shift_ops` (fills ``report`` if given; ``kernels`` as there).

    A :class:`ShiftCompError` raised inside is kept so that ``passes.pipeline.run_passes`` re-raises it
    with its own type (TVM turns it into a RuntimeError on the way out).
    """

    @tvm.transform.module_pass(opt_level=0, name="LowerShiftOps")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        try:
            return lower_shift_ops(mod, target, report, kernels=kernels)
        except ShiftCompError as e:
            _PENDING.error = e
            raise

    return _pass
