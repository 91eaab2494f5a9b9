"""Fuse the elementwise ops after a shift kernel into the kernel's store (``schedules.epilogue``).

After lowering, a conv layer of a ResNet reads::

    y  = call_tir(shift_conv2d_L, (packed, *plan))      # float32 (N, O, H, W)
    y1 = R.multiply(y, scale)                           # BatchNorm, folded: constants of shape (O, 1, 1)
    y2 = R.add(y1, shift)
    y3 = R.add(y2, residual)                            # optional
    y4 = R.nn.relu(y3)                                  # or relu6 / clip

and each op is a kernel that reads and writes the whole float32 tensor again. This pass replaces the chain
by one call of the kernel rebuilt with those ops as its epilogue (``KernelBuild.with_epilogue``; the
table is ``schedules.epilogue``'s channel table)::

    y4 = call_tir(shift_conv2d_L_mul_add_add_relu, (packed, *plan, table, residual))

The chain is followed while each value has exactly one use, in the same dataflow block, and the next op is
in :data:`EPILOGUE_RULES` with an operand the kernel can read: a float32 constant that is a scalar or varies
along the channel axis only (stacked into one ``(K, O)`` table), or one float32 tensor of the output's shape
(the residual). A shift output that is also a model output or a probe (``compile(probes=True)``) has two uses
and stays unfused. The kernel computes each step as TVM's legalisation of the op would, so the result is
the same bits as without the pass (``tests/passes/test_fuse_epilogue.py``).

**Integer handoff** (``handoff=True``, ``compile(fuse=True)``). When the chain's value (or the kernel's own
output) has one use, the quantising pack of another sum-then-shift kernel, and the producer supports that
kernel's layout (``KernelBuild.with_packed_store``, :mod:`schedules.packed_store`), the producer is rebuilt
to store the value quantised straight into the packed input, and the pack call is replaced by it::

    xp_B = call_tir(shift_conv2d_A_multiply_add_relu_into_B, (packed_A, *plan_A, table))   # int16, B's layout

No float tensor and no pack kernel between the two layers; ``FusedEpilogue.packed_for`` names ``B``. The
bits are the same (the store applies the pack's quantise expression to the same float32 value). Only while
``B``'s packed input for the whole batch is at most :data:`HANDOFF_MAX_PACKED_BYTES`: the producer reads one
packed tensor while it writes the other, where the float path reuses one.

Runs after weight lifting (``compiled.relax_module``, which ``sc.verify`` rebuilds single ops from, keeps
the plain kernels) and before legalisation, so the audit counts the fused ops as the kernel's epilogue.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax

from schedules.epilogue import UNARY_OPS, Epilogue, EpilogueStep

from .lowering import LoweringReport

__all__ = ["EPILOGUE_RULES", "FusedEpilogue", "FuseShiftEpilogues", "HANDOFF_MAX_PACKED_BYTES", "fuse_epilogues"]

#: the integer handoff keeps the producer's packed input and the packed output it writes alive at once, where
#: the float path reuses one packed buffer: a larger working set per layer. Above this size of the packed
#: tensor (the whole batch) that measured slower than the float store and pack it saves, so the producer
#: stores float32 and the pack stays.
HANDOFF_MAX_PACKED_BYTES = 4 << 20

_CALL_TIR = "relax.call_tir"


@dataclasses.dataclass(frozen=True)
class _Rule:
    """How a Relax op becomes an epilogue step: ``op`` for ``(chain value, operand)``, ``swapped`` for
    ``(operand, chain value)`` (None: only the first form fuses); unary ops give their bounds."""

    op: str
    swapped: str | None = None
    bounds: Callable[[relax.Call], tuple[float, float] | None] | None = None


def _clip_bounds(call: relax.Call) -> tuple[float, float] | None:
    """``relax.clip(x, lo, hi)``'s bounds (immediates; anything else is not fused)."""
    bounds = call.args[1:3]
    if len(bounds) != 2 or not all(isinstance(b, (tvm.tirx.FloatImm, tvm.tirx.IntImm)) for b in bounds):
        return None
    return float(bounds[0].value), float(bounds[1].value)


#: Relax op name -> epilogue rule (binary ops take one operand; relu/relu6/clip none)
EPILOGUE_RULES: dict[str, _Rule] = {
    "relax.multiply": _Rule("mul", swapped="mul"),
    "relax.add": _Rule("add", swapped="add"),
    "relax.subtract": _Rule("sub", swapped="rsub"),
    "relax.nn.relu": _Rule("relu"),
    "relax.nn.relu6": _Rule("clip", bounds=lambda call: (0.0, 6.0)),
    "relax.clip": _Rule("clip", bounds=_clip_bounds),
}


@dataclasses.dataclass(frozen=True)
class FusedEpilogue:
    """One fusion: the layer, its plain kernel, the fused kernel's name and the fused Relax ops in order;
    ``packed_for``: the layer whose packed input the kernel now writes (its quantising pack is gone), else
    ``None``."""

    layer: str
    kernel: str
    fused_kernel: str
    ops: tuple[str, ...]
    packed_for: str | None = None


def _shape(sinfo: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in sinfo.shape.values)
    except (AttributeError, TypeError, ValueError):
        return None


def _nbytes(sinfo: Any) -> float:
    """Bytes of a tensor type (infinite when its shape is not static)."""
    shape = _shape(sinfo)
    if shape is None:
        return float("inf")
    return float(np.prod(shape, dtype=np.int64)) * np.dtype(str(sinfo.dtype)).itemsize


def _is_f32_tensor(expr: Any, shape: tuple[int, ...]) -> bool:
    sinfo = expr.ty
    return isinstance(sinfo, relax.TensorType) and str(sinfo.dtype) == "float32" and _shape(sinfo) == shape


def _constant_operand(const: tvm.ir.expr.Constant, out_shape: tuple[int, ...]) -> tuple[str, Any] | None:
    """``("scalar", value)`` or ``("channel", (O,) array)`` for a float32 constant broadcast over the
    output, else None."""
    value = const.value.numpy()
    if value.dtype != np.float32 or value.ndim > len(out_shape):
        return None
    if value.size == 1:
        return "scalar", float(value.reshape(()))
    aligned = (1,) * (len(out_shape) - value.ndim) + value.shape
    varying = [a for a, d in enumerate(aligned) if d != 1]
    if varying == [1] and aligned[1] == out_shape[1]:
        return "channel", np.ascontiguousarray(value.reshape(-1))
    return None


@dataclasses.dataclass
class _Chain:
    steps: list[EpilogueStep] = dataclasses.field(default_factory=list)
    ops: list[str] = dataclasses.field(default_factory=list)
    rows: list[np.ndarray] = dataclasses.field(default_factory=list)
    tensor: Any = None

    def add(self, call: relax.Call, chain_var: relax.Var, out_shape: tuple[int, ...]) -> bool:
        """Append the step for ``call`` (which reads ``chain_var``); False if it cannot be fused."""
        rule = EPILOGUE_RULES.get(call.op.name) if isinstance(call.op, tvm.ir.Op) else None
        if rule is None:
            return False
        op_name = call.op.name.rsplit(".", 1)[-1]
        if rule.op in UNARY_OPS:
            bounds = rule.bounds(call) if rule.bounds is not None else (0.0, 0.0)
            if not call.args[0].same_as(chain_var) or bounds is None:
                return False
            self.steps.append(EpilogueStep(rule.op, value=bounds[0], value2=bounds[1]))
            self.ops.append(op_name)
            return True
        a, b = call.args[0], call.args[1]
        if a.same_as(chain_var) and not b.same_as(chain_var):
            op, other = rule.op, b
        elif b.same_as(chain_var) and not a.same_as(chain_var) and rule.swapped is not None:
            op, other = rule.swapped, a
        else:
            return False
        if isinstance(other, tvm.ir.expr.Constant):
            found = _constant_operand(other, out_shape)
            if found is None:
                return False
            kind, value = found
            if kind == "scalar":
                self.steps.append(EpilogueStep(op, "scalar", value=value))
            else:
                self.steps.append(EpilogueStep(op, "channel", index=len(self.rows)))
                self.rows.append(value)
        elif isinstance(other, relax.Var) and self.tensor is None and _is_f32_tensor(other, out_shape):
            self.steps.append(EpilogueStep(op, "tensor"))
            self.tensor = other
        else:
            return False
        self.ops.append(op_name)
        return True


def _var_uses(func: relax.Function) -> dict[Any, int]:
    """How often each Relax variable is read in ``func``."""
    uses: dict[Any, int] = {}

    def visit(e: Any) -> None:
        if isinstance(e, relax.Var):
            uses[e] = uses.get(e, 0) + 1

    for block in func.body.blocks:
        for b in block.bindings:
            relax.analysis.post_order_visit(b.value, visit)
    relax.analysis.post_order_visit(func.body.body, visit)
    return uses


def _packed_reader(bindings: list[Any], readers: dict[Any, list[int]], uses: dict[Any, int], var: relax.Var,
                   packs: dict[str, tuple[str, Any]]) -> tuple[int, str, Any] | None:
    """``(binding index, layer, PackedStore)`` when the only reader of ``var`` is the quantising pack of a
    layer in ``packs`` called on ``var`` itself and that pack's output is at most
    :data:`HANDOFF_MAX_PACKED_BYTES`, else None."""
    if uses.get(var, 0) != 1 or len(readers.get(var, [])) != 1:
        return None
    j = readers[var][0]
    call = bindings[j].value
    if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name == _CALL_TIR):
        return None
    gv, fields = call.args[0], list(call.args[1].fields)
    if not isinstance(gv, tvm.ir.GlobalVar) or gv.name_hint not in packs or len(fields) != 1 \
            or not fields[0].same_as(var) or _nbytes(call.ty) > HANDOFF_MAX_PACKED_BYTES:
        return None
    layer, store = packs[gv.name_hint]
    return j, layer, store


def fuse_epilogues(mod: tvm.IRModule, report: LoweringReport, handoff: bool = True
                   ) -> tuple[tvm.IRModule, list[FusedEpilogue]]:
    """``mod`` with every fusible elementwise chain after a shift kernel fused into it (module doc); with
    ``handoff``, a chain whose value only feeds another kernel's quantising pack is stored straight into that
    kernel's packed input where the producer supports the geometry (the pack call goes away).

    Returns the module and the fusions made.
    """
    mod = relax.transform.CanonicalizeBindings()(mod)
    builders = {low.kernel: (layer, low.build) for layer, low in report.layers.items()
                if low.build is not None and low.build.with_epilogue is not None}
    if not builders:
        return mod, []
    # quantising packs another kernel's producer may replace: prologue name -> (layer, PackedStore)
    packs = {low.prologue: (layer, low.build.packed_input) for layer, low in report.layers.items()
             if handoff and low.prologue_quantizes and low.build is not None and low.build.packed_input is not None}
    func = mod["main"]
    uses = _var_uses(func)
    fused: list[FusedEpilogue] = []
    builder = relax.BlockBuilder(mod)
    blocks = []
    for block in func.body.blocks:
        if not isinstance(block, relax.DataflowBlock):
            blocks.append(block)
            continue
        bindings = list(block.bindings)
        readers: dict[Any, list[int]] = {}
        for i, b in enumerate(bindings):
            def visit(e: Any, i: int = i) -> None:
                if isinstance(e, relax.Var):
                    readers.setdefault(e, []).append(i)
            relax.analysis.post_order_visit(b.value, visit)
        drop: set[int] = set()
        replace: dict[int, relax.Expr] = {}
        for i, b in enumerate(bindings):
            call = b.value
            if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name == _CALL_TIR):
                continue
            gv = call.args[0]
            if not isinstance(gv, tvm.ir.GlobalVar) or gv.name_hint not in builders or i in drop:
                continue
            out_shape = _shape(call.ty)
            if out_shape is None or not _is_f32_tensor(b.var, out_shape):
                continue
            chain, cur, members = _Chain(), b.var, []
            while uses.get(cur, 0) == 1 and len(readers.get(cur, [])) == 1:
                j = readers[cur][0]
                nxt = bindings[j]
                if not (isinstance(nxt.value, relax.Call) and _is_f32_tensor(nxt.var, out_shape)
                        and chain.add(nxt.value, cur, out_shape)):
                    break
                members.append(j)
                cur = nxt.var
            layer, build = builders[gv.name_hint]
            epilogue = Epilogue(tuple(chain.steps))
            into = _packed_reader(bindings, readers, uses, cur, packs)   # (binding, layer, store)
            prim = None
            if into is not None and build.with_packed_store is not None:
                prim = build.with_packed_store(epilogue, into[2])
            if prim is None:
                into = None
                if not members:
                    continue
                prim = build.with_epilogue(epilogue)
            old = mod[gv]
            for key, value in (old.attrs.items() if old.attrs is not None else []):
                if key != "global_symbol":
                    prim = prim.with_attr(key, value)
            prim = prim.with_attr("shiftcomp.epilogue", list(chain.ops) + (["pack"] if into else []))
            name = "_".join([gv.name_hint, *chain.ops] + ([f"into_{into[1]}"] if into else []))
            name = "".join(c if c.isalnum() else "_" for c in name)
            prim = prim.with_attr("global_symbol", name)
            new_gv = builder.add_func(prim, name)
            args = list(call.args[1].fields)
            rows = chain.rows + [np.full(out_shape[1], -0.0, np.float32)] * int(epilogue.needs_fence)
            if rows:
                args.append(relax.const(np.stack(rows).astype(np.float32)))
            if chain.tensor is not None:
                args.append(chain.tensor)
            if into is not None:      # the kernel writes what the pack would have: the pack's binding
                replace[into[0]] = relax.call_tir(new_gv, args, bindings[into[0]].value.ty)
                drop.update(members)
            else:
                replace[members[-1]] = relax.call_tir(new_gv, args, call.ty)
                drop.update(members[:-1])
            drop.add(i)
            fused.append(FusedEpilogue(layer, gv.name_hint, name, tuple(chain.ops),
                                       packed_for=into[1] if into else None))
        new_bindings = [relax.VarBinding(b.var, replace[i]) if i in replace else b
                        for i, b in enumerate(bindings) if i not in drop]
        blocks.append(relax.DataflowBlock(new_bindings))
    if not fused:
        return mod, []
    body = relax.SeqExpr(blocks, func.body.body)
    builder.update_func(mod.get_global_var("main"),
                        relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs))
    return builder.get(), fused


def FuseShiftEpilogues(report: LoweringReport, fused: list[FusedEpilogue] | None = None,  # noqa: N802 - TVM pass style
                       handoff: bool = True) -> tvm.transform.Pass:
    """:func:`fuse_epilogues` as a module pass; the fusions made are appended to ``fused``."""

    @tvm.transform.module_pass(opt_level=0, name="FuseShiftEpilogues")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out, made = fuse_epilogues(mod, report, handoff=handoff)
        if fused is not None:
            fused.extend(made)
        return out

    return _pass
