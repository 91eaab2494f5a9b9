"""``shiftcomp.compile``: PyTorch model -> deployable, multiplication-free (in its shift layers) TVM build.

    compiled = compile(model, example_inputs, target="llvm")
    y = compiled(x)                       # torch in, torch out (shape/dtype checked, NaN/inf rejected)
    print(compiled.audit)                 # multiplication audit of the lowered IR
    compiled.export("model.so")           # one file; shiftcomp.load("model.so") in a fresh process

Steps (``passes/pipeline.py`` names the pass lists):

1. trace + import (``shiftcomp.frontend``): shift layers become composite calls, weights as constants;
2. ``shift_lowering_passes``: FoldConstant, LowerShiftOps (call_tir of the scheduled shift kernels,
   accumulator widths proven from the weights), DeadCodeElimination;
3. lift the shift kernels' int8 weight codes into parameters of ``main`` (``passes/lift_weights.py``),
   so the library holds no shift weights and the artifact can store them bit-packed;
4. ``legalize_passes``; the multiplication audit (``passes/audit.py``) runs on this module;
5. ``fusion_passes`` (+ the MetaSchedule database when ``tuned`` is given), TVM's dataflow-lowering and
   finalisation passes, VM codegen (``tvm.compile`` with that pipeline already applied).

``compile(..., lower=False)`` builds the same import without step 2: the float multiply baseline.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax
from tvm.target import Target

from passes.audit import MultiplicationAudit, audit_module
from passes.lift_weights import LiftedWeights, lift_shift_weights
from passes.lower_shift import LoweredLayer, LoweringReport
from passes.pipeline import (dataflow_lower_passes, finalize_passes, fusion_passes, legalize_passes, run_passes,
                             shift_lowering_passes)
from shiftcomp.artifact import ArtifactInfo, ModelRunner
from shiftcomp.artifact import export as _export
from shiftcomp.frontend import ImportedModel, import_model

__all__ = ["compile", "lower", "CompiledModel", "resolve_target"]


def resolve_target(target: Any) -> Target:
    """``"llvm"`` = this host's CPU with its vector features, ``"cuda"``, a dict or a Target (schedules.target)."""
    from schedules.target import resolve_target as _resolve

    return _resolve(target)


def _as_inputs(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    xs = tuple(example_inputs)
    for i, x in enumerate(xs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"example input {i} must be a torch.Tensor, got {type(x).__name__}")
    return xs


def _outputs(func: relax.Function) -> tuple[list[tuple[tuple[int, ...], str]], bool]:
    ty = func.ret_ty
    if isinstance(ty, relax.TupleType):
        fields, is_tuple = list(ty.fields), True
    else:
        fields, is_tuple = [ty], False
    out = []
    for f in fields:
        if not isinstance(f, relax.TensorType) or f.shape is None:
            raise TypeError(f"compiled models must return tensors (or a flat tuple of tensors), got {f}")
        out.append((tuple(int(d) for d in f.shape.values), str(f.dtype)))
    return out, is_tuple


@dataclasses.dataclass(eq=False)
class CompiledModel(ModelRunner):
    """A compiled model: callable with torch tensors (:class:`shiftcomp.artifact.ModelRunner`).

    Attributes:
        executable: the Relax VM executable; its ``main`` takes ``(*inputs, *weights.arrays)``.
        target: the resolved TVM target.
        input_info / output_info / output_tuple: the compiled signature.
        weights: the shift layers' int8 weight codes, in ``main``'s parameter order after the inputs.
        layers: per shift layer: spec, accumulator plan, kernel name (``passes.lower_shift.LoweredLayer``).
        audit: the multiplication audit of the lowered IR (per inference).
        imported: the import result (fx graph, the unlowered Relax module, layer data).
        relax_module: the module after shift lowering and weight lifting (before legalisation).
        lowered: False for the float baseline (``lower=False``).
        tuned_kernels: names of PrimFuncs scheduled from the tuning database (empty without ``tuned``).
    """

    executable: Any
    target: Target
    input_info: list[tuple[tuple[int, ...], str]]
    output_info: list[tuple[tuple[int, ...], str]]
    output_tuple: bool
    weights: LiftedWeights
    layers: dict[str, LoweredLayer]
    audit: MultiplicationAudit
    imported: ImportedModel
    relax_module: tvm.IRModule
    lowered: bool = True
    tuned_kernels: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        dev = "cuda" if self.target.kind.name == "cuda" else "cpu"
        self._init_runner(self.executable, self.weights.arrays, dev)

    # -------------------------------------------------------------------- artifact helpers
    def layer_weight_count(self, layer: str) -> int:
        """Number of weights of a shift layer (without the kernels' zero-code padding)."""
        return int(np.prod(self.imported.layers[layer].info.weight_shape))

    def layer_summary(self) -> dict[str, dict[str, Any]]:
        """JSON-able per-layer facts: kind, shapes, activation format, accumulator dtype and bound."""
        out = {}
        for name, low in self.layers.items():
            info = low.info
            out[name] = {"kind": info.kind, "in_shape": list(info.in_shape), "out_shape": list(info.out_shape),
                         "weight_shape": list(info.weight_shape), "act_bits": info.act_bits,
                         "rounding": info.rounding, "s0": info.s0, "kernel": low.kernel,
                         "acc_dtype": low.plan.dtype if low.plan else "float32",
                         "acc_bound": str(low.plan.bound) if low.plan else None}
        return out

    def export(self, path: str | os.PathLike) -> ArtifactInfo:
        """Write one deployable file (format: :mod:`shiftcomp.artifact`); load it with ``shiftcomp.load``."""
        if not self.lowered:
            raise ValueError("the float baseline (lower=False) is not exportable as a shift artifact")
        return _export(self, path)

    def __repr__(self) -> str:
        return (f"CompiledModel(target={self.target.kind.name}, inputs={[list(s) for s, _ in self.input_info]}, "
                f"{len(self.layers)} shift layers, data-path multiplies={self.audit.datapath_multiplies})")


def lower(model: nn.Module, example_inputs: Any, target: Any = "llvm") -> tvm.IRModule:
    """The model's Relax module after the shift lowering passes (shift ops -> call_tir, weights constant),
    before legalisation/fusion/scheduling of the other ops (for tuning tools)."""
    tgt = resolve_target(target)
    inputs = _as_inputs(example_inputs)
    with _eval(model), torch.no_grad():
        imported = import_model(model, inputs)
    return run_passes(imported.mod, shift_lowering_passes(tgt), tgt)


class _eval:
    """Context: the model in eval mode, its previous mode restored afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        for m, t in self.modes.items():
            m.training = t


def _apply_database(mod: tvm.IRModule, tgt: Target, tuned: Any) -> tuple[tvm.IRModule, list[str]]:
    """Schedule PrimFuncs that have a record in the MetaSchedule database ``tuned`` (path or Database)."""
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(tuned), allow_missing=False) if isinstance(tuned, (str, os.PathLike)) \
        else tuned
    with tgt, db, tvm.transform.PassContext(opt_level=3):
        out = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    names = sorted(gv.name_hint for gv, f in out.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
                   and bool(f.attrs.get("tirx.is_scheduled", False))
                   and not (isinstance(mod[gv.name_hint], tvm.tirx.PrimFunc) and mod[gv.name_hint].attrs is not None
                            and bool(mod[gv.name_hint].attrs.get("tirx.is_scheduled", False))))
    return out, names


def compile(model: nn.Module, example_inputs: Any, target: Any = "llvm", *, tuned: Any = None,  # noqa: A001
            fuse: bool = True, lower: bool = True, probes: bool = False) -> CompiledModel:
    """Compile a PyTorch model (any traceable ``nn.Module``, a bare shift layer included).

    Args:
        model: the model; compiled in eval mode (its previous train/eval mode is restored afterwards).
        example_inputs: a tensor or a sequence of tensors; their shapes and dtypes become the (static) signature.
        target: ``"llvm"`` (this host's CPU, detected vector features), ``"cuda"``, a dict or a Target.
        tuned: a MetaSchedule database (folder path or ``Database``) to schedule the fused glue kernels
            (and any kernel without a manual schedule) from; ``None``: default schedules.
        fuse: fuse the elementwise glue (FuseOps/FuseTIR); shift kernels are never fused.
        lower: ``False`` builds the float multiply baseline (shift layers run their float fallback).
        probes: also output every shift layer's input and output (names in ``compiled.imported.probes``;
            used by :func:`shiftcomp.verification.verify` to locate differences).

    Raises:
        UnsupportedOpError / FrontendError: the model cannot be imported (the message says where).
        AccumulatorOverflowError: a layer's exact accumulator needs more than 64 bits.
        LoweringError: a shift layer cannot be lowered without multiplies (e.g. float activations
            without float kernels).
    """
    tgt = resolve_target(target)
    inputs = _as_inputs(example_inputs)
    with _eval(model), torch.no_grad():
        imported = import_model(model, inputs, probes=probes)
    report = LoweringReport()
    mod = imported.mod
    if lower:
        mod = run_passes(mod, shift_lowering_passes(tgt, report), tgt)
        mod, lifted = lift_shift_weights(mod)
    else:
        lifted = LiftedWeights(num_input=len(inputs))
    outputs, is_tuple = _outputs(mod["main"])
    legal = run_passes(mod, legalize_passes(tgt), tgt)
    audit = audit_module(legal)
    fused = run_passes(legal, fusion_passes(tgt, fuse), tgt)
    tuned_kernels: list[str] = []
    if tuned is not None:
        fused, tuned_kernels = _apply_database(fused, tgt, tuned)
    final = run_passes(fused, dataflow_lower_passes(tgt) + finalize_passes(tgt), tgt)
    ex = tvm.compile(final, target=tgt, relax_pipeline=None)
    return CompiledModel(executable=ex, target=tgt, input_info=list(imported.input_info), output_info=outputs,
                         output_tuple=is_tuple, weights=lifted, layers=dict(report.layers), audit=audit,
                         imported=imported, relax_module=mod, lowered=lower, tuned_kernels=tuned_kernels)
