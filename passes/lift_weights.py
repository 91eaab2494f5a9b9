"""LiftShiftWeights: turn the shift and adder kernels' constant weight inputs into extra parameters of ``main``.

After lowering, each shift kernel call reads its weight inputs (by default the int8 codes; a kernel family
may add inputs derived from them, see ``passes.kernels``) from constants, and each adder kernel call its
weight array (derived from the 8-bit ``w_q``, :mod:`passes.adder_weights`). For the deployable artifact the
codes are stored *bit-packed* next to the compiled library (``shiftcomp/artifact.py``) and fed to ``main``
at run time, so the library itself holds no shift weights and no 8-bit adder weights:

    main(x_0, ..., x_{n-1}, w_<layer_1>, ..., w_<layer_m>)      attrs {"num_input": n}

(``w_<layer>__<name>`` for an input other than the codes). The arrays, in parameter order, are returned
in a :class:`LiftedWeights`, with the :class:`~passes.derived_inputs.Derivation` of each derived input.
The kernels are unchanged: a buffer is a runtime tensor whether it comes from a constant or a parameter.
A kernel's ``shiftcomp.weight_inputs`` attribute names the inputs to lift (positions 1.. of the call; shift
kernels without it: ``["codes"]``); an adder kernel whose weights stay constants has an empty list.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax

from .derived_inputs import Derivation
from .lower_shift import LoweringReport
from .quantize_kernel import ROLE_ATTR

__all__ = ["LiftedWeights", "lift_shift_weights", "LiftShiftWeights", "LIFTED_ROLES"]


@dataclasses.dataclass
class LiftedWeights:
    """The lifted code constants, in ``main``'s extra-parameter order.

    Attributes:
        names: parameter names (``w_<layer>``).
        layers: the layer each one belongs to.
        arrays: the arrays (the kernels' layouts).
        derive: per parameter, ``None`` for the layer's codes, else how to rebuild it from them.
        num_input: how many of ``main``'s parameters are model inputs (they come first).
    """

    names: list[str] = dataclasses.field(default_factory=list)
    layers: list[str] = dataclasses.field(default_factory=list)
    arrays: list[np.ndarray] = dataclasses.field(default_factory=list)
    derive: list[Derivation | None] = dataclasses.field(default_factory=list)
    num_input: int = 0


#: kernel roles whose weight inputs are lifted (passes/lower_shift.py, passes/lower_adder.py)
LIFTED_ROLES = ("shift", "adder")


def _shift_kernel(mod: tvm.IRModule, gv: relax.Expr) -> tuple[str, list[str]] | None:
    """``(layer, weight input names)`` of a shift or adder kernel PrimFunc, else ``None``."""
    if not isinstance(gv, tvm.ir.GlobalVar) or gv not in mod.get_global_vars():
        return None
    f = mod[gv]
    if not isinstance(f, tvm.tirx.PrimFunc) or f.attrs is None or ROLE_ATTR not in f.attrs:
        return None
    if str(f.attrs[ROLE_ATTR]) not in LIFTED_ROLES:
        return None
    names = [str(n) for n in f.attrs["shiftcomp.weight_inputs"]] if "shiftcomp.weight_inputs" in f.attrs \
        else ["codes"]
    return str(f.attrs["shiftcomp.layer"]), names


@relax.expr_functor.mutator
class _Lifter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, out: LiftedWeights, report: LoweringReport | None) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.out = out
        self.report = report
        self.new_params: list[relax.Var] = []
        self.call_tir_op = tvm.ir.Op.get("relax.call_tir")

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = self.visit_expr_post_order(call)
        if call.op != self.call_tir_op:
            return call
        found = _shift_kernel(self.mod_, call.args[0])
        if found is None:
            return call
        layer, names = found
        derive = {}
        if self.report is not None and layer in self.report.layers:
            derive = {w.name: w.derive for w in self.report.layers[layer].weights}
        args = list(call.args[1].fields)
        layer_id = "".join(c if c.isalnum() else "_" for c in layer)
        for pos, wname in enumerate(names, start=1):
            const = args[pos]
            if not isinstance(const, tvm.ir.expr.Constant):
                continue
            arr = const.value.numpy()
            name = f"w_{layer_id}" if wname == "codes" else f"w_{layer_id}__{wname}"
            var = relax.Var(name, relax.TensorType(arr.shape, str(arr.dtype)))
            self.new_params.append(var)
            self.out.names.append(name)
            self.out.layers.append(layer)
            self.out.arrays.append(arr)
            self.out.derive.append(derive.get(wname))
            args[pos] = var
        return relax.call_tir(call.args[0], args, call.ty)


def lift_shift_weights(mod: tvm.IRModule, func_name: str = "main", report: LoweringReport | None = None,
                       out: LiftedWeights | None = None) -> tuple[tvm.IRModule, LiftedWeights]:
    """Lift the shift and adder kernels' constant weight inputs of ``func_name`` into parameters (module doc).

    ``report``: the lowering report, for the derivations of derived inputs; ``out``: filled in place.
    """
    out = out if out is not None else LiftedWeights()
    func = mod[func_name]
    lifter = _Lifter(mod, out, report)
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


def LiftShiftWeights(out: LiftedWeights, report: LoweringReport | None = None) -> tvm.transform.Pass:  # noqa: N802
    """The module pass form of :func:`lift_shift_weights`; fills ``out``."""

    @tvm.transform.module_pass(opt_level=0, name="LiftShiftWeights")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return lift_shift_weights(mod, "main", report, out)[0]

    return _pass
