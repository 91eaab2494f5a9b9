"""``shiftcomp.verify`` (this module is ``shiftcomp.verification``): bit-exactness of every compiled shift op, and whole-model agreement.

    report = verify(compiled, model, inputs)
    print(report)          # per shift op: bit-exact?  in-model ulp drift;  whole model: max abs/ulp, argmax
    assert report.ok

Per shift op (the numeric contract, docs/numerics.md): the model runs through the exact reference (``reference.exact``) with
forward hooks capturing every shift layer's float input and reference output. The *same* PrimFuncs the
compiled model uses (its quantise prologue and shift kernel, taken from ``compiled.relax_module``) are
built into one standalone module, one Relax function per layer, and run on the captured input with the
compiled weight codes; the result must ``torch.equal`` the reference output.

Whole model: ``compiled(*inputs)`` vs the model under ``reference.exact``: max abs difference, max ulp
difference and argmax agreement. Float glue (BatchNorm, pooling, adds) is not bit-exact across
frameworks, so with ``probes=True`` (default) a probed twin of the compiled model (same target, every
shift layer's input and output as extra outputs) shows where drift enters: per layer, the max ulp
difference of its in-model input and output vs the PyTorch values.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import tvm
from torch import nn
from tvm import relax

from passes.pipeline import dataflow_lower_passes, finalize_passes, fusion_passes, legalize_passes, run_passes
from passes.quantize_kernel import ROLE_ATTR
from shiftcomp.compiler import compile as compile_model
from shiftcomp.nn import is_shift_layer
from shiftcomp.reference import exact

__all__ = ["OpCheck", "VerifyReport", "verify", "ulp_diff", "standalone_ops"]


def ulp_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise distance in float32 units in the last place (int64; 0 for equal values, +0 == -0)."""
    def ordered(t: torch.Tensor) -> torch.Tensor:
        i = t.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
        return torch.where(i < 0, -(i & 0x7FFFFFFF), i)

    return (ordered(a) - ordered(b)).abs()


@dataclasses.dataclass
class OpCheck:
    """One shift layer's check.

    Attributes:
        layer: module path.
        kind: ``"dense"`` or ``"conv2d"``.
        acc_dtype: accumulator dtype of its kernel (``"float32"`` for float activations).
        bit_exact: standalone compiled op == reference output (``torch.equal``).
        mismatches: number of differing elements (standalone).
        max_ulp: max ulp difference (standalone; 0 when bit exact).
        float_acts: float-activation layer (act_bits None): checked within the float32 summation error bound
            against the float64 reference (docs/numerics.md, float activations), not bit for bit.
        within_bound: for float-activation layers, whether every element is within that bound.
        in_model: differences of the layer's input and output inside the compiled model vs PyTorch
            (``None`` without probes): ``{"in"|"out": (mismatching elements, max abs diff, max ulp)}``.
            Float glue (BatchNorm etc.) is computed by different code in TVM and PyTorch, so the inputs
            drift; ulp distances of values near zero are large, so look at counts and max abs too.
    """

    layer: str
    kind: str
    acc_dtype: str
    bit_exact: bool
    mismatches: int
    max_ulp: int
    float_acts: bool = False
    within_bound: bool | None = None
    in_model: dict[str, tuple[int, float, int]] | None = None

    @property
    def ok(self) -> bool:
        """Bit-exact (fixed point), or within the summation bound (float activations)."""
        return self.bit_exact or (self.float_acts and bool(self.within_bound))


@dataclasses.dataclass
class VerifyReport:
    """Result of :func:`verify`.

    Attributes:
        ops: per shift op checks, in graph order.
        max_abs: max abs difference of the model outputs (compiled vs exact PyTorch).
        max_ulp: max ulp difference of the model outputs.
        argmax_agreement: fraction of rows whose argmax agree (over the last dim of the first output).
        rows: number of rows compared for the argmax.
    """

    ops: list[OpCheck]
    max_abs: float
    max_ulp: int
    argmax_agreement: float
    rows: int

    @property
    def ops_bit_exact(self) -> bool:
        """Every fixed-point shift op bit-exact, every float-activation op within its error bound."""
        return all(o.ok for o in self.ops)

    @property
    def argmax_identical(self) -> bool:
        """Every row's argmax agrees."""
        return self.argmax_agreement == 1.0

    @property
    def ok(self) -> bool:
        """Every shift op bit-exact and every argmax identical."""
        return self.ops_bit_exact and self.argmax_identical

    def differing_ops(self) -> list[OpCheck]:
        """Ops that are not bit-exact, or whose in-model input/output differs from PyTorch."""
        return [o for o in self.ops if not o.bit_exact
                or (o.in_model is not None and (o.in_model["in"][0] or o.in_model["out"][0]))]

    def __str__(self) -> str:
        head = (f"{'shift op':<26} {'kind':<6} {'acc':<7} {'exact':<5} {'mism':>5} {'ulp':>4} | "
                f"{'in-model input: n / max abs / ulp':>34} | {'in-model output: n / max abs / ulp':>34}")
        lines = ["Verification (compiled vs shiftcomp.reference); standalone op check, then in-model drift",
                 head, "-" * len(head)]

        def fmt(t: tuple[int, float, int] | None) -> str:
            return "-" if t is None else f"{t[0]} / {t[1]:.3g} / {t[2]}"

        for o in self.ops:
            im = o.in_model or {}
            lines.append(f"{o.layer[:26]:<26} {o.kind:<6} {o.acc_dtype:<7} {str(o.bit_exact):<5} "
                         f"{o.mismatches:>5} {o.max_ulp:>4} | {fmt(im.get('in')):>34} | {fmt(im.get('out')):>34}")
        lines.append("-" * len(head))
        lines.append(f"shift ops bit-exact: {sum(o.bit_exact for o in self.ops)}/{len(self.ops)}")
        n_float = sum(o.float_acts for o in self.ops)
        if n_float:
            lines.append(f"float-activation ops within the summation bound: "
                         f"{sum(bool(o.within_bound) for o in self.ops if o.float_acts)}/{n_float}")
        lines.append(f"model output: max abs diff {self.max_abs:.3g}, max ulp diff {self.max_ulp}, "
                     f"argmax agreement {self.argmax_agreement:.2%} of {self.rows} rows")
        return "\n".join(lines)


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float, int]:
    """(mismatching elements, max abs diff, max ulp diff)."""
    if a.numel() == 0:
        return (0, 0.0, 0)
    u = ulp_diff(a, b)
    return (int((u > 0).sum()), float((a - b).abs().max()), int(u.max()))


def _float_bound(data: Any, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Error bound of a float32 shift op vs its float64-then-rounded reference (docs/numerics.md):
    ``gamma_K * Σ_k |x_k w_k| + 2u (|ref| + |bias|)``, ``u = 2**-24``, ``gamma_K = K u / (1 - K u)``."""
    info = data.info
    w = torch.from_numpy(data.float_weight).double().abs()
    u = 2.0 ** -24
    k = int(np.prod(info.weight_shape[1:]))
    gamma = k * u / (1 - k * u)
    if info.kind == "dense":
        s = F.linear(x.double().abs(), w)
        bias_shape = (-1,)
    else:
        t, l, b, r = info.padding
        xp = F.pad(x.double().abs(), (l, r, t, b))
        s = F.conv2d(xp, w, None, info.strides, 0, info.dilation, info.groups)
        bias_shape = (1, -1, 1, 1)
    bias = torch.from_numpy(data.bias).double().abs().view(bias_shape) if data.bias is not None else 0.0
    return gamma * s + 2 * u * (ref.double().abs() + bias)


# ---------------------------------------------------------------------------------------------- capture
def _capture(model: nn.Module, layers: Sequence[str], inputs: Sequence[torch.Tensor]
             ) -> tuple[Any, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Run ``model`` under the exact reference; return (outputs, {layer: (input, output)})."""
    # a bare shift layer is compiled as the child "layer" of a wrapper (shiftcomp.frontend.trace)
    from shiftcomp.frontend.adder_layers import is_adder_layer

    bare = is_shift_layer(model) or is_adder_layer(model)
    named = {"layer": model} if bare else dict(model.named_modules())
    seen: dict[str, int] = {}
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    wanted = {name.split("#")[0] for name in layers}

    def hook(name: str):
        def f(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            k = seen.get(name, 0)
            seen[name] = k + 1
            key = name if k == 0 else f"{name}#{k}"
            captured[key] = (args[0].detach().clone(), out.detach().clone())
        return f

    for name in wanted:
        handles.append(named[name].register_forward_hook(hook(name)))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with exact(model), torch.no_grad():
            out = model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t
    return out, captured


# ---------------------------------------------------------------------------------------------- standalone ops
def _find_prologue(mod: tvm.IRModule, layer: str) -> tvm.ir.GlobalVar | None:
    for gv, f in mod.functions_items():
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and ROLE_ATTR in f.attrs \
                and str(f.attrs[ROLE_ATTR]) == "prologue" and str(f.attrs.get("shiftcomp.layer", "")) == layer:
            return gv
    return None


def _is_adder(low: Any) -> bool:
    return str(low.info.composite).startswith("shiftcomp.adder")


def _kernel_call_args(mod: tvm.IRModule, kernel: str) -> list:
    """The arguments of the ``call_tir`` of ``kernel`` in ``main`` (adder kernels keep their constants there)."""
    found: list = []
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(e: Any) -> None:
        if isinstance(e, relax.Call) and e.op == call_tir and isinstance(e.args[0], tvm.ir.GlobalVar) \
                and e.args[0].name_hint == kernel and not found:
            found.extend(e.args[1].fields)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    if not found:
        raise RuntimeError(f"no call of kernel {kernel!r} in the compiled module")
    return found


def _layer_weights(compiled: Any, layer: str) -> list[np.ndarray]:
    """The layer's weight inputs of ``main``, in order."""
    return [a for n, a in zip(compiled.weights.layers, compiled.weights.arrays) if n == layer]


def _op_weights(compiled: Any, layer: str) -> list[np.ndarray]:
    """The weight inputs a layer's kernel reads after x: an adder kernel reads one, ``low.codes`` (lifted into
    ``main`` or, for float and wide weights, a constant of the call); shift kernels read lifted parameters."""
    low = compiled.layers[layer]
    return [low.codes] if _is_adder(low) else _layer_weights(compiled, layer)


def _prologue_out(low: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of a layer's kernel-prologue output, as its kernel provider declared them."""
    shape, dtype = low.build.prologue_out
    return tuple(int(d) for d in shape), str(dtype)


def standalone_ops(compiled: Any) -> tuple[Any, dict[str, str]]:
    """Build the compiled model's shift ops as standalone functions (one ``tvm.compile``).

    Function ``op_<i>(x: float32 in_shape, *weights) -> float32 out_shape`` runs the layer's own quantise
    PrimFunc, kernel prologue (if any; a quantising prologue stands for both) and shift kernel PrimFunc,
    exactly as inside the compiled model,
    with the layer's weight inputs (``compiled.weights``, in order). Returns
    ``(executable, {layer: function name})``.
    """
    src = compiled.relax_module
    bb = relax.BlockBuilder(src)
    names: dict[str, str] = {}
    for i, (layer, low) in enumerate(compiled.layers.items()):
        info = low.info
        adder = _is_adder(low)
        kernel_gv = src.get_global_var(low.kernel)
        x = relax.Var("x", relax.TensorType(info.in_shape, "float32"))
        ws = [relax.Var(f"w{j}", relax.TensorType(a.shape, str(a.dtype)))
              for j, a in enumerate(_op_weights(compiled, layer))]
        fname = f"op_{i}"
        with bb.function(fname, [x, *ws]):
            with bb.dataflow():
                xq: relax.Expr = x
                if info.act_bits is not None and not low.prologue_quantizes:
                    q = _find_prologue(src, layer)
                    if q is None:
                        raise RuntimeError(f"no quantise prologue for layer {layer!r} in the compiled module")
                    xq = bb.emit(relax.call_tir(q, [x], relax.TensorType(info.in_shape, "int32")))
                spec_x = tuple(int(d) for d in low.spec.x_shape)
                if adder and info.kind == "dense":   # the (1, K, 1, M) image of passes/lower_adder.py
                    xq = bb.emit(relax.op.permute_dims(relax.op.reshape(xq, (spec_x[3], spec_x[1])), [1, 0]))
                if tuple(info.in_shape) != spec_x:
                    xq = bb.emit(relax.op.reshape(xq, spec_x))
                if adder:   # kernel args (x_q, w, bias): the bias constant as in the compiled module
                    args = [xq, *ws, _kernel_call_args(src, low.kernel)[2]]
                else:
                    if low.prologue is not None:
                        pro = src.get_global_var(low.prologue)
                        shape, dtype = _prologue_out(low)
                        xq = bb.emit(relax.call_tir(pro, [xq], relax.TensorType(shape, dtype)))
                    data = compiled.imported.layers[layer]
                    args = [xq, *ws] + ([relax.const(data.bias, "float32")] if data.bias is not None else [])
                spec_out = tuple(int(d) for d in low.spec.out_shape)
                y = bb.emit(relax.call_tir(kernel_gv, args, relax.TensorType(spec_out, "float32")))
                if adder and info.kind == "dense":
                    y = bb.emit(relax.op.permute_dims(relax.op.reshape(y, (spec_out[1], spec_out[3])), [1, 0]))
                if spec_out != tuple(info.out_shape):
                    y = bb.emit(relax.op.reshape(y, info.out_shape))
                y = bb.emit_output(y)
            bb.emit_func_output(y)
        names[layer] = fname
    mod = bb.get()
    keep = set(names.values())
    mod = tvm.IRModule({gv: f for gv, f in mod.functions_items()
                        if not isinstance(f, relax.Function) or gv.name_hint in keep})
    tgt = compiled.target
    passes = (legalize_passes(tgt) + fusion_passes(tgt, fuse=False, entry_functions=sorted(keep))
              + dataflow_lower_passes(tgt) + finalize_passes(tgt))
    mod = run_passes(mod, passes, tgt)
    return tvm.compile(mod, target=tgt, relax_pipeline=None), names


# ---------------------------------------------------------------------------------------------- verify
def verify(compiled: Any, model: nn.Module, inputs: Any, *, probes: bool = True) -> "VerifyReport":
    """Check ``compiled`` against ``model`` run through ``shiftcomp.reference`` (see the module docstring).

    Args:
        compiled: a :class:`shiftcomp.compiler.CompiledModel` of ``model``.
        model: the PyTorch model it was compiled from.
        inputs: one input tensor or a sequence of them, matching the compiled signature.
        probes: also compile a probed twin to report per-layer in-model ulp drift (one more compile,
            with the settings ``compiled`` was built with: same target, database, fusion, kernel provider).
    """

    xs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    layers = list(compiled.layers)
    ref_out, captured = _capture(model, layers, xs)

    # per-op, standalone, same PrimFuncs
    ops: list[OpCheck] = []
    if layers:
        ex, fnames = standalone_ops(compiled)
        dev = tvm.cuda(0) if compiled.device_type == "cuda" else tvm.cpu(0)
        vm = relax.VirtualMachine(ex, dev)
        for layer in layers:
            low = compiled.layers[layer]
            x_in, y_ref = captured[layer]
            out = vm[fnames[layer]](tvm.runtime.tensor(x_in.contiguous().numpy(), dev),
                                    *[tvm.runtime.tensor(a, dev) for a in _op_weights(compiled, layer)])
            y = torch.from_numpy(out.numpy().copy())
            diff = ulp_diff(y, y_ref)
            check = OpCheck(layer=layer, kind=low.info.kind, acc_dtype=low.plan.dtype if low.plan else "float32",
                            bit_exact=torch.equal(y, y_ref), mismatches=int((diff > 0).sum()),
                            max_ulp=int(diff.max()) if diff.numel() else 0, float_acts=low.float_acts)
            if low.float_acts and _is_adder(low):
                from shiftcomp.reference import adder_float_error_bound

                k = int(np.prod(low.info.weight_shape[1:]))
                bound = adder_float_error_bound(y_ref, k, y_ref.abs() + 1.0) + 2.0 ** -23 * y_ref.abs()
                check.within_bound = bool(((y.double() - y_ref.double()).abs() <= bound).all())
            elif low.float_acts:
                bound = _float_bound(compiled.imported.layers[layer], x_in, y_ref)
                check.within_bound = bool(((y.double() - y_ref.double()).abs() <= bound).all())
            ops.append(check)

    # whole model
    y = compiled(*xs)
    ys = y if isinstance(y, tuple) else (y,)
    rs = ref_out if isinstance(ref_out, (tuple, list)) else (ref_out,)
    max_abs, max_ulp = 0.0, 0
    for a, b in zip(ys, rs):
        max_abs = max(max_abs, float((a - b.float()).abs().max()) if a.numel() else 0.0)
        max_ulp = max(max_ulp, int(ulp_diff(a, b).max()) if a.numel() else 0)
    a0, r0 = ys[0], rs[0]
    if a0.dim() >= 1 and a0.numel():
        am, rm = a0.reshape(-1, a0.shape[-1]).argmax(-1), r0.reshape(-1, r0.shape[-1]).argmax(-1)
        rows, agree = int(am.numel()), float((am == rm).float().mean())
    else:
        rows, agree = 0, 1.0

    if probes and layers:
        st = compiled.settings
        twin = compile_model(model, xs, target=compiled.target, probes=True, tuned=st.tuned, fuse=st.fuse,
                             kernels=st.kernels)
        outs = twin(*xs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        n_out = len(outs) - len(twin.imported.probes)
        values = dict(zip(twin.imported.probes, outs[n_out:]))
        for o in ops:
            if f"{o.layer}:in" in values and o.layer in captured:
                x_in, y_ref = captured[o.layer]
                o.in_model = {"in": _diff(values[f"{o.layer}:in"], x_in), "out": _diff(values[f"{o.layer}:out"], y_ref)}
    return VerifyReport(ops=ops, max_abs=max_abs, max_ulp=max_ulp, argmax_agreement=agree, rows=rows)

