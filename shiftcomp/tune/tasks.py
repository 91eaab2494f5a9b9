"""Tuning tasks of a shift model, taken from the same pipeline ``shiftcomp.compile`` runs.

* ``shift_kernels``: one task per distinct shift kernel, the kernel provider's ``tuning_key`` (what
  ``passes.kernels.DatabaseKernels`` looks up at compile time);
* ``shift_glue``: the fused float glue (BN, ReLU, quantise, ...) of the module after the pipeline's
  ``fuse`` stage (what the ``apply_database`` stage looks up);
* ``float``: the fused kernels of the float baseline (:mod:`shiftcomp.baseline`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from passes.quantize_kernel import ROLE_ATTR
from shiftcomp.baseline import import_float, prepare_module
from shiftcomp.compiler import compile_stage

__all__ = ["Task", "SIDES", "extract_tasks", "model_tasks", "fused_tasks"]

#: task groups of a model, in tuning order
SIDES: tuple[str, ...] = ("shift_kernels", "shift_glue", "float")


@dataclass
class Task:
    """One tuning task: a PrimFunc and how often the model calls it (``kernel``: ``(kind, spec)`` of a
    shift-kernel task, for its manual schedule)."""

    name: str
    prim: tvm.tirx.PrimFunc
    weight: float = 1.0
    kernel: tuple[str, Any] | None = None


def _is_scheduled(prim: tvm.tirx.PrimFunc) -> bool:
    return prim.attrs is not None and bool(prim.attrs.get("tirx.is_scheduled", False))


def fused_tasks(mod: tvm.IRModule, target: Target) -> list[Task]:
    """Unscheduled, non-shift PrimFuncs of a fused Relax module (deduplicated, weighted by calls)."""
    out: list[Task] = []
    for t in ms.relax_integration.extract_tasks(mod, target):
        prim = t.dispatched[0]["main"] if isinstance(t.dispatched[0], tvm.IRModule) else t.dispatched[0]
        role = str(prim.attrs.get(ROLE_ATTR, "")) if prim.attrs is not None else ""
        if _is_scheduled(prim) or role == "shift":
            continue
        out.append(Task(str(t.task_name), prim, float(t.weight)))
    return out


def extract_tasks(mod: tvm.IRModule | tvm.tirx.PrimFunc | Mapping[str, tvm.tirx.PrimFunc], target: Target,
                  name_filter: Sequence[str] | None = None) -> list[Task]:
    """Tasks of a Relax module (prepared with :func:`shiftcomp.baseline.prepare_module`) or of PrimFuncs.

    Already scheduled PrimFuncs are skipped; ``name_filter`` keeps tasks whose name contains one of them.
    """
    if isinstance(mod, tvm.tirx.PrimFunc):
        mod = tvm.IRModule({"main": mod})
    elif not isinstance(mod, tvm.IRModule):
        mod = tvm.IRModule({str(k): v for k, v in mod.items()})
    if any(isinstance(f, tvm.relax.Function) for _, f in mod.functions_items()):
        tasks = fused_tasks(prepare_module(mod, target), target)
    else:
        tasks = [Task(gv.name_hint, f) for gv, f in mod.functions_items()
                 if isinstance(f, tvm.tirx.PrimFunc) and not _is_scheduled(f)]
    if name_filter:
        tasks = [t for t in tasks if any(s in t.name for s in name_filter)]
    return tasks


def model_tasks(model: Any, example_inputs: Sequence[Any], target: Target, sides: Sequence[str] = SIDES,
                kernels: Any = None) -> dict[str, list[Task]]:
    """``{side: tasks}`` of a shift model (see the module docstring); ``kernels``: the kernel provider
    compile will use (default: the manual schedules)."""
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise ValueError(f"unknown task group(s) {sorted(unknown)}; known: {', '.join(SIDES)}")
    out: dict[str, list[Task]] = {}
    if "shift_kernels" in sides or "shift_glue" in sides:
        fused, state = compile_stage(model, example_inputs, target, "fuse", tuned=None, kernels=kernels)
        kernel_tasks: dict[str, Task] = {}
        for low in state.report.layers.values():
            build = low.build
            if build is None or build.tuning_key is None:
                continue
            if build.task_name in kernel_tasks:
                kernel_tasks[build.task_name].weight += 1
            else:
                kind = low.info.kind + ("_float" if low.float_acts else "")
                kernel_tasks[build.task_name] = Task(build.task_name, build.tuning_key(), 1.0, (kind, low.spec))
        out["shift_kernels"] = list(kernel_tasks.values())
        out["shift_glue"] = fused_tasks(fused, target)
    if "float" in sides:
        out["float"] = fused_tasks(prepare_module(import_float(model, example_inputs), target), target)
    return {s: out[s] for s in sides}
