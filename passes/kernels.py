"""Kernel providers: where the shift lowering gets each layer's kernel.

``LowerShiftOps`` asks a provider, passed in (never patched in), for one :class:`KernelBuild` per layer::

    provider.kernel(KernelRequest(kind, spec, info, shift, sign, codes, target)) -> KernelBuild

* :class:`ManualKernels` (the default): the hand-written schedules of ``schedules/`` through the family
  table :data:`KERNEL_FAMILIES` (``kind -> builder``). A new kernel family is one entry there, or a
  ``ManualKernels(families={...})`` of its own.
* :class:`DatabaseKernels`: asks a MetaSchedule database for the build's ``tuning_key`` and replays the
  best record on its ``unscheduled`` compute; falls back to the wrapped provider. ``shiftcomp.tune``
  records exactly these keys, so what it tunes is what compile finds.

A :class:`KernelBuild` says what the kernel reads besides ``x``: its constant weight inputs, in order
(default: the int8 codes). An input that is not the codes carries a :class:`~passes.derived_inputs.Derivation`
so that the artifact can rebuild it from the packed codes at load time. An optional ``prologue`` PrimFunc
runs on ``x`` first (e.g. quantise and pad into another layout); its output is what ``main`` reads.
Calling convention: ``prologue(x, out)``, ``main(x_or_prologue_out, *weights, [bias], out)``.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import tvm
from tvm.target import Target

from schedules import build_shift_kernel, kernel_task_name, unscheduled_kernel
from schedules.database import normalize

from .contract import ShiftLayerInfo
from .derived_inputs import Derivation

__all__ = ["KernelRequest", "WeightInput", "KernelBuild", "KernelProvider", "KernelFamily", "KERNEL_FAMILIES",
           "ManualKernels", "DatabaseKernels", "default_kernel"]

log = logging.getLogger("shiftcomp.kernels")


@dataclasses.dataclass(frozen=True)
class KernelRequest:
    """What the lowering knows about one layer when it asks for a kernel.

    Attributes:
        kind: ``"dense"`` / ``"conv2d"`` (fixed-point activations) or ``"dense_float"`` / ``"conv2d_float"``.
        spec: ``schedules.compute.DenseSpec`` / ``Conv2dSpec`` (shapes, ``s0``, ``frac_bits``, accumulator).
        info: the composite's layer info (:class:`passes.contract.ShiftLayerInfo`).
        shift, sign: the exact integer weights (int8, PyTorch weight layout).
        codes: the default int8 codes in the default kernels' layout (``schedules.compute``).
        logical_codes: ``sign * (shift - s0 + 1)`` in PyTorch layout, what the artifact stores and what a
            :class:`Derivation` receives.
        target: the compile target.
    """

    kind: str
    spec: Any
    info: ShiftLayerInfo
    shift: np.ndarray
    sign: np.ndarray
    codes: np.ndarray
    logical_codes: np.ndarray
    target: Target


@dataclasses.dataclass(frozen=True)
class WeightInput:
    """One constant input of a kernel (after ``x``).

    Attributes:
        name: short name (``"codes"`` for the int8 codes; the ``main`` parameter becomes ``w_<layer>`` for
            codes and ``w_<layer>__<name>`` otherwise).
        array: the value the kernel is compiled and run with.
        derive: ``None`` when ``array`` *is* the layer's codes (in any layout the artifact's layout steps
            reproduce, or stored as is); otherwise how to rebuild it from the logical codes at load time.
    """

    name: str
    array: np.ndarray
    derive: Derivation | None = None


@dataclasses.dataclass(frozen=True)
class KernelBuild:
    """A layer's kernel as a provider returns it.

    Attributes:
        main: the scheduled kernel PrimFunc.
        weights: its constant inputs after ``x``, in order.
        prologue: optional PrimFunc applied to ``x`` first; ``prologue_out`` = its ``(shape, dtype)``.
        unscheduled: zero-argument callable giving ``main``'s compute before scheduling (database replay).
        tuning_key: zero-argument callable giving the PrimFunc whose record a database is asked for.
        task_name: readable name of the tuning task (``shiftcomp.tune`` and ``tuned_kernels`` use it).
        source: ``"manual"`` or ``"database"``.
    """

    main: tvm.tirx.PrimFunc
    weights: tuple[WeightInput, ...]
    prologue: tvm.tirx.PrimFunc | None = None
    prologue_out: tuple[tuple[int, ...], str] | None = None
    unscheduled: Callable[[], tvm.tirx.PrimFunc] | None = None
    tuning_key: Callable[[], tvm.tirx.PrimFunc] | None = None
    task_name: str = ""
    source: str = "manual"


class KernelProvider(Protocol):
    """Anything with ``kernel(request) -> KernelBuild``."""

    def kernel(self, request: KernelRequest) -> KernelBuild:  # noqa: D102
        ...


KernelFamily = Callable[[KernelRequest], KernelBuild]


def default_kernel(req: KernelRequest) -> KernelBuild:
    """Today's kernels: ``schedules.build_shift_kernel`` reading the int8 codes."""
    return KernelBuild(
        main=build_shift_kernel(req.kind, req.spec, req.target),
        weights=(WeightInput("codes", req.codes),),
        unscheduled=lambda: unscheduled_kernel(req.kind, req.spec),
        tuning_key=lambda: unscheduled_kernel(req.kind, req.spec, canonical=True),
        task_name=kernel_task_name(req.kind, req.spec),
    )


#: kernel kind -> builder; register a new family with one entry (or pass ``families=`` to ManualKernels)
KERNEL_FAMILIES: dict[str, KernelFamily] = {
    "dense": default_kernel,
    "conv2d": default_kernel,
    "dense_float": default_kernel,
    "conv2d_float": default_kernel,
}


class ManualKernels:
    """The hand-written schedules: ``families[request.kind](request)``."""

    def __init__(self, families: dict[str, KernelFamily] | None = None) -> None:
        self.families = dict(KERNEL_FAMILIES if families is None else families)

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
