"""``shiftcomp.compile``: PyTorch model -> deployable, multiplication-free (in its shift layers) TVM build.

    compiled = compile(model, example_inputs, target="llvm")
    y = compiled(x)                       # torch in, torch out (shape/dtype checked, NaN/inf rejected)
    print(compiled.audit)                 # multiplication audit of the lowered IR
    compiled.export("model.so")           # one file; shiftcomp.load("model.so") in a fresh process

``compile`` imports the model (``shiftcomp.frontend``: shift layers become composite calls, weights
constants) and runs ``passes.pipeline.PIPELINE`` on it (shift lowering with a kernel provider, weight
lifting, legalisation, the multiplication audit, fusion, the tuning database, TVM's lowering), then VM
codegen. ``tuned="auto"`` (the default) applies ``schedules/<target_key>/`` when this target has one, to
the shift kernels and the glue kernels alike. ``compile(..., lower=False)`` builds the float multiply
baseline from the same import. :func:`compile_stage` returns an intermediate module for tools.
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

from passes.audit import MultiplicationAudit
from passes.fuse_epilogue import FusedEpilogue
from passes.kernels import DatabaseKernels, KernelProvider, ManualKernels
from passes.lift_weights import LiftedWeights
from passes.lower_shift import LoweredLayer
from passes.pipeline import PipelineOptions, PipelineState, run_pipeline
from schedules.database import resolve_database
from schedules.shape_choices import ShapeChoices, resolve_choices
from schedules.target import resolve_target
from shiftcomp.artifact import ArtifactInfo, ModelRunner
from shiftcomp.artifact import export as _export
from shiftcomp.frontend import ImportedModel, import_model
from shiftcomp.native_log import quiet_tvm

__all__ = ["compile", "compile_stage", "CompiledModel", "CompileSettings", "resolve_target", "FUSE_OPTIONS"]

#: values of ``compile(fuse=...)``, most fused first (see :func:`compile`)
FUSE_OPTIONS = (True, "epilogue", "glue", False)


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """The settings a model was compiled with (``verify`` rebuilds its probed twin with the same ones).

    Attributes:
        tuned: what was passed as ``tuned`` (``"auto"``, ``None``, a folder or a Database).
        database: where the applied database came from (a folder, ``"<Database>"``), or ``None``.
        fuse, lower: as passed to :func:`compile`.
        kernels: the kernel provider passed in (``None``: the default for ``tuned``).
    """

    tuned: Any = "auto"
    database: str | None = None
    fuse: bool | str = True
    lower: bool = True
    kernels: Any = None


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
        weights: the shift and adder layers' lifted weight inputs, in ``main``'s parameter order after the inputs.
        layers: per shift/adder layer: spec, accumulator plan, kernel name (``passes.lower_shift.LoweredLayer``).
        audit: the multiplication audit of the lowered IR (per inference).
        imported: the import result (fx graph, the unlowered Relax module, layer data).
        relax_module: the module after shift lowering and weight lifting (before legalisation).
        lowered: False for the float baseline (``lower=False``).
        tuned_kernels: kernels scheduled from the tuning database: shift kernels by task name, then glue
            PrimFuncs by name, then the layer shapes built with tuned sum-then-shift shapes (``"shape: ..."``;
            empty when nothing tuned applied).
        settings: the :class:`CompileSettings` it was built with.
        epilogues: the elementwise chains (BatchNorm, residual add, ReLU, ...) fused into shift kernels
            (``passes.fuse_epilogue.FusedEpilogue``: layer, kernel names, Relax ops).
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
    settings: CompileSettings = dataclasses.field(default_factory=CompileSettings)
    epilogues: list[FusedEpilogue] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        dev = "cuda" if self.target.kind.name == "cuda" else "cpu"
        self._init_runner(self.executable, self.weights.arrays, dev)

    # -------------------------------------------------------------------- artifact helpers
    def layer_weight_count(self, layer: str) -> int:
        """Number of weights of a shift or adder layer (without the kernels' zero-code padding)."""
        return int(np.prod(self.layers[layer].info.weight_shape))

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


def _prepare(model: nn.Module, example_inputs: Any, target: Any, tuned: Any, fuse: bool | str, lower: bool,
             probes: bool, kernels: KernelProvider | None
             ) -> tuple[ImportedModel, PipelineOptions, CompileSettings, DatabaseKernels | None, ShapeChoices]:
    if fuse not in FUSE_OPTIONS:
        raise ValueError(f"fuse must be one of {FUSE_OPTIONS}, got {fuse!r}")
    tgt = resolve_target(target)
    inputs = _as_inputs(example_inputs)
    database, where = resolve_database(tuned, tgt)
    choices = resolve_choices(tuned, tgt)
    with _eval(model), torch.no_grad():
        imported = import_model(model, inputs, probes=probes)
    provider = kernels if kernels is not None else ManualKernels(choices=choices if len(choices) else None)
    db_kernels = None
    if database is not None:
        db_kernels = DatabaseKernels(database, fallback=provider)
        provider = db_kernels
    options = PipelineOptions(target=tgt, lower=lower, fuse=fuse, kernels=provider, database=database)
    settings = CompileSettings(tuned=tuned, database=where, fuse=fuse, lower=lower, kernels=kernels)
    return imported, options, settings, db_kernels, choices


def compile_stage(model: nn.Module, example_inputs: Any, target: Any = "llvm", stage: str = "fuse", *,
                  tuned: Any = "auto", fuse: bool | str = True, lower: bool = True,
                  kernels: KernelProvider | None = None) -> tuple[tvm.IRModule, PipelineState]:
    """The model's module after pipeline stage ``stage`` (``passes.pipeline.STAGES``), with the state.

    The same import and stages as :func:`compile` with the same arguments: ``shiftcomp.tune`` extracts
    its glue tasks from ``stage="fuse"``, the module ``compile``'s ``apply_database`` stage sees.
    """
    with quiet_tvm():
        imported, options, _, _, _ = _prepare(model, example_inputs, target, tuned, fuse, lower, False, kernels)
        return run_pipeline(imported.mod, options, until=stage)


def compile(model: nn.Module, example_inputs: Any, target: Any = "llvm", *, tuned: Any = "auto",  # noqa: A001
            fuse: bool | str = True, lower: bool = True, probes: bool = False,
            kernels: KernelProvider | None = None) -> CompiledModel:
    """Compile a PyTorch model (any traceable ``nn.Module``, a bare shift layer included).

    Args:
        model: the model; compiled in eval mode (its previous train/eval mode is restored afterwards).
        example_inputs: a tensor or a sequence of tensors; their shapes and dtypes become the (static) signature.
        target: ``"llvm"`` (this host's CPU, detected vector features), ``"cuda"``, a dict or a Target.
        tuned: the MetaSchedule database to schedule kernels from, shift and glue kernels alike:
            ``"auto"`` (default): ``schedules/<target_key>/`` when this target has one, else none;
            a folder (or a parent of ``<target_key>/``); a ``Database``; ``None``: built-in schedules only.
            ``compiled.tuned_kernels`` lists what the database served. The same folder's tuned
            sum-then-shift shapes (``schedules.shape_choices``, written by ``shiftcomp.tune``) apply to
            the default kernels (listed as ``"shape: <layer shape>"``).
        fuse: ``True``: fuse the elementwise glue: the ops after a sum-then-shift kernel into its store
            (``passes.fuse_epilogue``; listed in ``compiled.epilogues``) and, where the next layer is a
            sum-then-shift conv of a supported geometry, store it quantised straight into that kernel's packed
            input (no float tensor, no pack kernel between: ``schedules.packed_store``; ``packed_for`` in
            ``compiled.epilogues``) while that input, for the whole batch, is at most
            ``passes.fuse_epilogue.HANDOFF_MAX_PACKED_BYTES`` (4 MiB); the rest by FuseOps/FuseTIR.
            ``"epilogue"``: the same without that integer handoff; ``"glue"``: FuseOps/FuseTIR only. All
            three give the same bits. ``False``: every op its own kernel (float glue may then round
            differently: LLVM forms FMAs only inside one kernel).
        lower: ``False`` builds the float multiply baseline (shift layers run their float fallback).
        probes: also output every shift layer's input and output (names in ``compiled.imported.probes``;
            used by :func:`shiftcomp.verification.verify` to locate differences).
        kernels: the shift-kernel provider (``passes.kernels``; default: the manual schedules, wrapped
            in ``DatabaseKernels`` when a database applies).

    Raises:
        UnsupportedOpError / FrontendError: the model cannot be imported (the message says where).
        AccumulatorOverflowError: a layer's exact accumulator needs more than 64 bits.
        LoweringError: a shift layer cannot be lowered without multiplies (e.g. float activations
            without float kernels).
        ValueError: ``tuned`` names a folder without a database.
    """
    with quiet_tvm():
        imported, options, settings, db_kernels, choices = _prepare(model, example_inputs, target, tuned, fuse,
                                                                    lower, probes, kernels)
        final, state = run_pipeline(imported.mod, options)
        ex = tvm.compile(final, target=options.target, relax_pipeline=None)
    lifted_mod = state.modules["lift_weights"]
    outputs, is_tuple = _outputs(lifted_mod["main"])
    tuned_kernels = ((list(db_kernels.hits) if db_kernels is not None else []) + list(state.tuned_glue)
                     + [f"shape: {k}" for k in dict.fromkeys(choices.hits)])
    return CompiledModel(executable=ex, target=options.target, input_info=list(imported.input_info),
                         output_info=outputs, output_tuple=is_tuple, weights=state.lifted,
                         layers=dict(state.report.layers), audit=state.audit, imported=imported,
                         relax_module=lifted_mod, lowered=lower, tuned_kernels=tuned_kernels, settings=settings,
                         epilogues=list(state.epilogues))
