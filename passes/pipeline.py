"""The shiftcomp compilation pipeline: the one list of named stages that ``shiftcomp.compile`` runs
(cf. TVM's ``relax/backend/*/pipeline.py``).

    PIPELINE =
      lower_shift      FoldConstant, LowerShiftOps(kernel provider), DeadCodeElimination      (ours)
      lift_weights     LiftShiftWeights: kernel weight constants -> parameters of main          (ours)
      fuse_epilogue    FuseShiftEpilogues: BatchNorm/residual/ReLU after a kernel -> its store  (ours)
      legalize         LegalizeOps, AnnotateTIROpPattern                                         (TVM)
      audit            the multiplication audit, on the legalised module (module unchanged)      (ours)
      fuse             FoldConstant, FuseOps, FuseTIR, DeadCodeElimination (+ DLight on GPUs)    (TVM)
      apply_database   MetaScheduleApplyDatabase for the glue kernels (when a database is given) (TVM)
      dataflow_lower   TVM's per-target list (RewriteDataflowReshape ... CallTIRRewrite)
      finalize         TVM's per-target list (StaticPlanBlockMemory ... AttachGlobalSymbol)

then VM codegen (``tvm.compile(mod, relax_pipeline=None)``). ``run_pipeline(mod, options, until=stage)``
stops after a stage, for tools that need an intermediate module: ``shiftcomp.tune`` extracts the glue
tasks at ``until="fuse"``, exactly the module that ``apply_database`` later sees. ``lower=False`` skips
``lower_shift`` (the float multiply baseline from the same import). ``fuse_epilogue`` rebuilds a kernel
that supports it (sum-then-shift) with the elementwise ops after it (BatchNorm's multiply and add, a
residual add, ReLU/ReLU6) in its store (``passes/fuse_epilogue.py``); it runs with ``fuse=True``. Shift kernels
are ``kOpaque``, so TVM's fusion only merges the remaining float glue (pooling, a shortcut's pad, the
quantise kernel of layers without a quantising prologue, ...).
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl
from tvm.target import Target

from .audit import MultiplicationAudit, audit_module
from .fuse_epilogue import FusedEpilogue, FuseShiftEpilogues
from .kernels import KernelProvider, ManualKernels
from .lift_weights import LiftedWeights, LiftShiftWeights
from .lower_shift import LoweringReport, LowerShiftOps, pop_pending_error

__all__ = ["PipelineOptions", "PipelineState", "Stage", "PIPELINE", "STAGES", "run_pipeline", "run_passes",
           "shift_lowering_passes", "legalize_passes", "fusion_passes", "dataflow_lower_passes", "finalize_passes",
           "shift_pipeline"]


@dataclasses.dataclass
class PipelineOptions:
    """How to compile (one transform each, torchao style).

    Attributes:
        target: the resolved TVM target.
        lower: lower the shift layers (``False``: the float multiply baseline).
        fuse: ``True``: fuse shift-kernel epilogues, store a conv's output straight into the next shift
            kernel's packed input where the geometry allows (``schedules.packed_store``), and fuse the
            elementwise glue (FuseOps/FuseTIR); ``"epilogue"``: the same but every kernel stores float32 (a
            quantising pack before each shift kernel); ``"glue"``: the glue only; ``False``: none of these.
        kernels: the shift-kernel provider (:mod:`passes.kernels`).
        database: a MetaSchedule database for the glue kernels, or ``None``.
    """

    target: Target
    lower: bool = True
    fuse: bool | str = True
    kernels: KernelProvider = dataclasses.field(default_factory=ManualKernels)
    database: Any = None


@dataclasses.dataclass
class PipelineState:
    """What the stages found, filled while the pipeline runs.

    Attributes:
        report: the shift lowering's per-layer report.
        lifted: the lifted weight inputs of ``main``.
        epilogues: the elementwise chains fused into kernels (after ``fuse_epilogue``).
        audit: the multiplication audit (after ``audit``).
        tuned_glue: glue PrimFuncs scheduled from the database (after ``apply_database``).
        modules: each stage's output module, by stage name.
    """

    report: LoweringReport = dataclasses.field(default_factory=LoweringReport)
    lifted: LiftedWeights = dataclasses.field(default_factory=LiftedWeights)
    epilogues: list[FusedEpilogue] = dataclasses.field(default_factory=list)
    audit: MultiplicationAudit | None = None
    tuned_glue: list[str] = dataclasses.field(default_factory=list)
    modules: dict[str, tvm.IRModule] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One named stage: its pass list for given options and state (empty: the stage is skipped)."""

    name: str
    passes: Callable[[PipelineOptions, PipelineState], list[tvm.transform.Pass]]


# ---------------------------------------------------------------------------------------------- pass lists
def _backend(target: Target) -> Any:
    """TVM's per-target pipeline module (``relax.backend.<x>.pipeline``)."""
    name = {"cuda": "cuda", "llvm": "cpu_generic"}.get(target.kind.name, "gpu_generic")
    return importlib.import_module(f"tvm.relax.backend.{name}.pipeline")


def shift_lowering_passes(target: Target, report: LoweringReport | None = None, *,
                          kernels: KernelProvider | None = None) -> list[tvm.transform.Pass]:
    """Fold constants, lower the shift composites to call_tir of shift kernels, drop the dead composites."""
    return [relax.transform.FoldConstant(), LowerShiftOps(target, report, kernels=kernels),
            relax.transform.DeadCodeElimination(["main"])]


def legalize_passes(target: Target) -> list[tvm.transform.Pass]:  # noqa: ARG001 - same on every target
    """Every remaining Relax op -> call_tir of a TIR PrimFunc, with op patterns for fusion."""
    return [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern()]


def fusion_passes(target: Target, fuse: bool | str = True, entry_functions: list[str] | None = None
                  ) -> list[tvm.transform.Pass]:
    """Fuse the elementwise glue around the (opaque) shift kernels; DLight default schedules on GPUs."""
    passes: list[tvm.transform.Pass] = [relax.transform.FoldConstant()]
    if fuse:
        passes += [relax.transform.FuseOps(), relax.transform.FuseTIR()]
    passes.append(relax.transform.DeadCodeElimination(entry_functions or ["main"]))
    if target.kind.name == "cuda":
        passes.append(dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                              dl.gpu.GeneralReduction(), dl.gpu.Fallback()))
    return passes


def dataflow_lower_passes(target: Target) -> list[tvm.transform.Pass]:
    """TVM's per-target dataflow lowering."""
    return list(_backend(target).dataflow_lower_passes(target))


def finalize_passes(target: Target) -> list[tvm.transform.Pass]:
    """TVM's per-target finalisation (memory planning, VM shape lowering, symbols)."""
    return list(_backend(target).finalize_passes(target))


def _audit_pass(state: PipelineState) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="MultiplicationAudit")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        state.audit = audit_module(mod)
        return mod

    return _pass


def _scheduled(mod: tvm.IRModule) -> set[str]:
    return {gv.name_hint for gv, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and bool(f.attrs.get("tirx.is_scheduled", False))}


def _apply_database_pass(database: Any, state: PipelineState) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="ApplyTuningDatabase")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        before = _scheduled(mod)
        with database:
            out = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        state.tuned_glue.extend(sorted(_scheduled(out) - before))
        return out

    return _pass


#: the pipeline, in order (see the module docstring)
PIPELINE: tuple[Stage, ...] = (
    Stage("lower_shift", lambda o, s: shift_lowering_passes(o.target, s.report, kernels=o.kernels) if o.lower else []),
    Stage("lift_weights", lambda o, s: [LiftShiftWeights(s.lifted, s.report)]),
    Stage("fuse_epilogue", lambda o, s: [FuseShiftEpilogues(s.report, s.epilogues, handoff=o.fuse is True),
                                         relax.transform.Normalize()]
          if o.lower and o.fuse in (True, "epilogue") else []),
    Stage("legalize", lambda o, s: legalize_passes(o.target)),
    Stage("audit", lambda o, s: [_audit_pass(s)]),
    Stage("fuse", lambda o, s: fusion_passes(o.target, o.fuse)),
    Stage("apply_database", lambda o, s: [_apply_database_pass(o.database, s)] if o.database is not None else []),
    Stage("dataflow_lower", lambda o, s: dataflow_lower_passes(o.target)),
    Stage("finalize", lambda o, s: finalize_passes(o.target)),
)
STAGES: tuple[str, ...] = tuple(st.name for st in PIPELINE)


def run_passes(mod: tvm.IRModule, passes: list[tvm.transform.Pass], target: Target) -> tvm.IRModule:
    """Run ``passes`` on ``mod`` under ``target`` (opt_level 3); a shiftcomp error raised inside a pass
    comes out with its own type (TVM re-raises Python exceptions as RuntimeError)."""
    pop_pending_error()
    try:
        with target, tvm.transform.PassContext(opt_level=3):
            return tvm.transform.Sequential(passes)(mod)
    except Exception:
        err = pop_pending_error()
        if err is not None:
            raise err from None
        raise


def run_pipeline(mod: tvm.IRModule, options: PipelineOptions, state: PipelineState | None = None, *,
                 until: str | None = None) -> tuple[tvm.IRModule, PipelineState]:
    """Run :data:`PIPELINE` on an imported module (through stage ``until`` when given).

    Returns the module and the :class:`PipelineState` (each stage's output in ``state.modules``).
    """
    if until is not None and until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    state = state if state is not None else PipelineState()
    for stage in PIPELINE:
        passes = stage.passes(options, state)
        if passes:
            mod = run_passes(mod, passes, options.target)
        state.modules[stage.name] = mod
        if stage.name == until:
            break
    return mod, state


def shift_pipeline(target: Target, report: LoweringReport | None = None, *, fuse: bool = True
                   ) -> list[tvm.transform.Pass]:
    """The whole pipeline as one flat pass list (for reading; ``run_pipeline`` is what compile runs)."""
    state = PipelineState(report=report if report is not None else LoweringReport())
    options = PipelineOptions(target=target, fuse=fuse)
    return [p for stage in PIPELINE for p in stage.passes(options, state)]
