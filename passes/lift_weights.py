"""LiftShiftWeights: turn the shift kernels' int8 code constants into extra parameters of ``main``.

After lowering, each shift kernel call reads its weight codes from an int8 constant. For the deployable
artifact the codes are stored *bit-packed* next to the compiled library (``shiftcomp/artifact.py``) and
fed to ``main`` at run time, so the library itself holds no shift weights:

    main(x_0, ..., x_{n-1}, w_<layer_1>, ..., w_<layer_m>)      attrs {"num_input": n}

The codes, in parameter order, are returned in a :class:`LiftedWeights`. The kernels are unchanged: a
code buffer is a runtime tensor whether it comes from a constant or a parameter.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax

from .quantize_kernel import ROLE_ATTR

__all__ = ["LiftedWeights", "lift_shift_weights"]


@dataclasses.dataclass
class LiftedWeights:
    """The lifted code constants, in ``main``'s extra-parameter order.

    Attributes:
        names: parameter names (``w_<layer>``).
        layers: the layer each one belongs to.
        arrays: the int8 code arrays (the kernels' layout).
        num_input: how many of ``main``'s parameters are model inputs (they come first).
    """

    names: list[str] = dataclasses.field(default_factory=list)
    layers: list[str] = dataclasses.field(default_factory=list)
    arrays: list[np.ndarray] = dataclasses.field(default_factory=list)
    num_input: int = 0


def _is_shift_kernel(mod: tvm.IRModule, gv: relax.Expr) -> str | None:
    if not isinstance(gv, tvm.ir.GlobalVar) or gv not in mod.get_global_vars():
        return None
    f = mod[gv]
    if not isinstance(f, tvm.tirx.PrimFunc) or f.attrs is None or ROLE_ATTR not in f.attrs:
        return None
    return str(f.attrs["shiftcomp.layer"]) if str(f.attrs[ROLE_ATTR]) == "shift" else None


@relax.expr_functor.mutator
class _Lifter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, out: LiftedWeights) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.out = out
        self.new_params: list[relax.Var] = []
        self.call_tir_op = tvm.ir.Op.get("relax.call_tir")

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if call.op != self.call_tir_op:
            return call
        layer = _is_shift_kernel(self.mod_, call.args[0])
        if layer is None:
            return call
        args = list(call.args[1].fields)
        codes = args[1]
        if not isinstance(codes, tvm.ir.expr.Constant):
            return call
        arr = codes.value.numpy()
        name = "w_" + "".join(c if c.isalnum() else "_" for c in layer)
        var = relax.Var(name, relax.TensorType(arr.shape, "int8"))
        self.new_params.append(var)
        self.out.names.append(name)
        self.out.layers.append(layer)
        self.out.arrays.append(arr)
        args[1] = var
        return relax.call_tir(call.args[0], args, call.ty)


def lift_shift_weights(mod: tvm.IRModule, func_name: str = "main") -> tuple[tvm.IRModule, LiftedWeights]:
    """Lift the shift kernels' code constants of ``func_name`` into parameters (see module doc)."""
    out = LiftedWeights()
    func = mod[func_name]
    lifter = _Lifter(mod, out)
    body = lifter.visit_expr(func.body)
    out.num_input = len(func.params)
    if not lifter.new_params:
        return mod, out
    attrs = dict(func.attrs) if func.attrs is not None else {}
    attrs["num_input"] = len(func.params)
    new_func = relax.Function(list(func.params) + lifter.new_params, body, func.ret_ty, func.is_pure)
    for k, v in attrs.items():
        new_func = new_func.with_attr(k, v)
    new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    new_mod[func_name] = new_func
    return new_mod, out
