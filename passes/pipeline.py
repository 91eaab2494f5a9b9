"""The shiftcomp compilation pipeline, as readable pass lists (cf. TVM's relax/backend/*/pipeline.py).

    shift_pipeline(target) =
        shift_lowering_passes   FoldConstant, LowerShiftOps, DeadCodeElimination      (ours)
      + legalize_passes         LegalizeOps, AnnotateTIROpPattern                       (TVM)
      + fusion_passes           FoldConstant, FuseOps, FuseTIR, DeadCodeElimination     (TVM; + DLight on GPUs)
      + dataflow_lower_passes   TVM's per-target list (RewriteDataflowReshape ... CallTIRRewrite)
      + finalize_passes         TVM's per-target list (StaticPlanBlockMemory ... AttachGlobalSymbol)

The compiler runs the same lists in stages so that it can look at the module in between (lift the weight
codes into parameters after ``shift_lowering_passes``; run the multiplication audit after
``legalize_passes``, where every Relax op is exactly one ``call_tir``). Shift kernels are marked
``op_pattern = kOpaque``, so fusion only merges the float glue (BN, ReLU, quantise prologue, ...).

Without ``shift_lowering_passes`` the same lists build the float multiply baseline from the same import.
"""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.target import Target

from .lower_shift import LoweringReport, LowerShiftOps, pop_pending_error

__all__ = ["shift_lowering_passes", "legalize_passes", "fusion_passes", "dataflow_lower_passes",
           "finalize_passes", "shift_pipeline", "run_passes"]


def _backend(target: Target):
    """TVM's per-target pipeline module (``relax.backend.<x>.pipeline``)."""
    import importlib

    kind = target.kind.name
    name = {"cuda": "cuda", "llvm": "cpu_generic"}.get(kind, "gpu_generic")
    return importlib.import_module(f"tvm.relax.backend.{name}.pipeline")


def shift_lowering_passes(target: Target, report: LoweringReport | None = None) -> list[tvm.transform.Pass]:
    """Fold constants, lower the shift composites to call_tir of shift kernels, drop the dead composites."""
    return [
        relax.transform.FoldConstant(),
        LowerShiftOps(target, report),
        relax.transform.DeadCodeElimination(["main"]),
    ]


def legalize_passes(target: Target) -> list[tvm.transform.Pass]:  # noqa: ARG001 - same on every target
    """Every remaining Relax op -> call_tir of a TIR PrimFunc, with op patterns for fusion."""
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
    ]


def fusion_passes(target: Target, fuse: bool = True, entry_functions: list[str] | None = None
                  ) -> list[tvm.transform.Pass]:
    """Fuse the elementwise glue around the (opaque) shift kernels; DLight default schedules on GPUs."""
    passes: list[tvm.transform.Pass] = [relax.transform.FoldConstant()]
    if fuse:
        passes += [relax.transform.FuseOps(), relax.transform.FuseTIR()]
    passes.append(relax.transform.DeadCodeElimination(entry_functions or ["main"]))
    if target.kind.name == "cuda":
        from tvm.s_tir import dlight as dl

        passes.append(dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                              dl.gpu.GeneralReduction(), dl.gpu.Fallback()))
    return passes


def dataflow_lower_passes(target: Target) -> list[tvm.transform.Pass]:
    """TVM's per-target dataflow lowering."""
    return list(_backend(target).dataflow_lower_passes(target))


def finalize_passes(target: Target) -> list[tvm.transform.Pass]:
    """TVM's per-target finalisation (memory planning, VM shape lowering, symbols)."""
    return list(_backend(target).finalize_passes(target))


def shift_pipeline(target: Target, report: LoweringReport | None = None, *, fuse: bool = True
                   ) -> list[tvm.transform.Pass]:
    """The whole pipeline as one list (see the module docstring)."""
    return (shift_lowering_passes(target, report) + legalize_passes(target) + fusion_passes(target, fuse)
            + dataflow_lower_passes(target) + finalize_passes(target))


def run_passes(mod: tvm.IRModule, passes: list[tvm.transform.Pass], target: Target) -> tvm.IRModule:
    """Run ``passes`` in order under ``target`` and ``PassContext(opt_level=3)``.

    A shiftcomp error raised inside a pass comes out with its own type (not TVM's RuntimeError).
    """
    pop_pending_error()
    try:
        with target, tvm.transform.PassContext(opt_level=3):
            return tvm.transform.Sequential(passes)(mod)
    except Exception:
        err = pop_pending_error()
        if err is not None:
            raise err from None
        raise
