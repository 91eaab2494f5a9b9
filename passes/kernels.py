"""Kernel providers: where the shift lowering gets each layer's kernel.

``LowerShiftOps`` asks a provider, passed in (never patched in), for one :class:`KernelBuild` per layer::

    provider.kernel(KernelRequest(kind, spec, info, shift, sign, codes, target)) -> KernelBuild

* :class:`ManualKernels` (the default): the hand-written schedules of ``schedules/`` through the family
  table :data:`KERNEL_FAMILIES` (``kind -> builder``): sum-then-shift for fixed-point conv2d and dense at
  batch > 1 on LLVM, the table GEMV kernel for batch-1 fixed-point dense on x86, the per-term kernels
  (:data:`PER_TERM_FAMILIES`) otherwise. A new kernel family is one entry there, or a
  ``ManualKernels(families={...})`` of its own. ``ManualKernels(choices=...)`` builds the sum-then-shift
  kernels with tuned shapes (lanes, block vectors, input-channel tiles; :mod:`schedules.shape_choices`),
  which is how ``compile`` applies what ``shiftcomp.tune`` measured for them.
* :class:`DatabaseKernels`: asks a MetaSchedule database for the build's ``tuning_key`` and replays the
  best record on its ``unscheduled`` compute; falls back to the wrapped provider. ``shiftcomp.tune``
  records exactly these keys, so what it tunes is what compile finds. A build without a ``tuning_key``
  (sum-then-shift, table GEMV: their plan arrays / code layouts, not a schedule, carry the weights) is used
  as the fallback returns it, so on a CPU with a database they still win, and the database serves
  the per-term kernels that remain (batch-1 dense the table GEMV family refuses, float activations).

A :class:`KernelBuild` says what the kernel reads besides ``x``: its constant weight inputs, in order
(default: the int8 codes). An input that is not the codes carries a :class:`~passes.derived_inputs.Derivation`
so that the artifact can rebuild it from the packed codes at load time. An optional ``prologue`` PrimFunc
runs on ``x_q`` first (e.g. pad into another layout); its output is what ``main`` reads. An optional
``prologue_float`` does the same from the float input, quantising it itself: the lowering then drops the
quantise kernel (``x_q`` never exists). Calling convention: ``prologue(x, out)``,
``main(x_or_prologue_out, *weights, [bias], out)``.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

import tvm

from schedules.database import normalize
from schedules.shape_choices import ShapeChoices

from .kernel_build import KernelBuild, KernelRequest, WeightInput, default_kernel
from .sum_then_shift_family import sum_then_shift_kernel
from .table_gemv_family import table_gemv_kernel

__all__ = ["KernelRequest", "WeightInput", "KernelBuild", "KernelProvider", "KernelFamily", "KERNEL_FAMILIES",
           "PER_TERM_FAMILIES",
           "ManualKernels", "DatabaseKernels", "default_kernel", "families_with"]

log = logging.getLogger("shiftcomp.kernels")


class KernelProvider(Protocol):
    """Anything with ``kernel(request) -> KernelBuild``."""

    def kernel(self, request: KernelRequest) -> KernelBuild:  # noqa: D102
        ...


KernelFamily = Callable[[KernelRequest], KernelBuild]


#: the per-term shift kernels of ``schedules.build_shift_kernel`` for every kind (the default before
#: sum-then-shift; ``ManualKernels(families=PER_TERM_FAMILIES)`` compiles with them alone)
PER_TERM_FAMILIES: dict[str, KernelFamily] = {
    "dense": default_kernel,
    "conv2d": default_kernel,
    "dense_float": default_kernel,
    "conv2d_float": default_kernel,
}

#: kernel kind -> builder; register a new family with one entry (or pass ``families=`` to ManualKernels).
#: Fixed-point conv2d and dense go to sum-then-shift, which itself falls back to the per-term kernels where
#: it does not apply (non-LLVM targets; see passes.sum_then_shift_family); batch-1 dense on x86 goes to the
#: table GEMV kernel first (passes.table_gemv_family), which falls back to that.
KERNEL_FAMILIES: dict[str, KernelFamily] = {
    **PER_TERM_FAMILIES,
    "dense": table_gemv_kernel,
    "conv2d": sum_then_shift_kernel,
}


def families_with(choices: ShapeChoices) -> dict[str, KernelFamily]:
    """:data:`KERNEL_FAMILIES` with the sum-then-shift builds (conv2d, and batched dense behind the table
    GEMV family) taking their shapes from tuned ``choices`` (:mod:`schedules.shape_choices`)."""
    stst = functools.partial(sum_then_shift_kernel, choices=choices)
    return {**KERNEL_FAMILIES, "conv2d": stst, "dense": functools.partial(table_gemv_kernel, fallback=stst)}


class ManualKernels:
    """The hand-written schedules: ``families[request.kind](request)``; ``choices``: tuned sum-then-shift
    shapes for the default families (:func:`families_with`)."""

    def __init__(self, families: dict[str, KernelFamily] | None = None, choices: ShapeChoices | None = None) -> None:
        if families is not None and choices is not None:
            raise ValueError("pass families or choices, not both")
        self.families = dict(families if families is not None
                             else families_with(choices) if choices is not None else KERNEL_FAMILIES)

    def kernel(self, request: KernelRequest) -> KernelBuild:  # noqa: D102
        try:
            family = self.families[request.kind]
        except KeyError:
            raise ValueError(f"no kernel family for kind {request.kind!r} (have {sorted(self.families)})") from None
        return family(request)


class DatabaseKernels:
    """Kernels scheduled from a MetaSchedule database's best record, else from ``fallback``.

    Attributes:
        hits: task names of the kernels served from the database (in lowering order).
    """

    def __init__(self, database: Any, fallback: KernelProvider | None = None) -> None:
        self.database = database
        self.fallback = fallback if fallback is not None else ManualKernels()
        self.hits: list[str] = []

    def kernel(self, request: KernelRequest) -> KernelBuild:  # noqa: D102
        build = self.fallback.kernel(request)
        if build.tuning_key is None or build.unscheduled is None:
            return build
        rec = self.database.query_tuning_record(normalize(build.tuning_key()), request.target, "main")
        if rec is None:
            return build
        sch = tvm.s_tir.Schedule(normalize(build.unscheduled()))
        try:
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception as e:  # noqa: BLE001 - a record for another loop nest: keep the manual schedule
            log.warning("tuning record of %s does not apply (%s); using the manual schedule", build.task_name, e)
            return build
        self.hits.append(build.task_name)
        main = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        return dataclasses.replace(build, main=main, source="database")
