"""What a kernel provider returns: the request, weight-input and build records, and today's default kernel.

Split from :mod:`passes.kernels` so that kernel families (e.g. :mod:`passes.sum_then_shift_family`) can
build on them while :mod:`passes.kernels` registers those families (imports point one way).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm.target import Target

from schedules import build_shift_kernel, kernel_task_name, unscheduled_kernel

from .contract import ShiftLayerInfo
from .derived_inputs import Derivation

__all__ = ["KernelRequest", "WeightInput", "KernelBuild", "default_kernel"]


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
        prologue_float: optional variant of ``prologue`` that reads the float32 input and quantises it itself
            (the layer's ``Q(I, F)``, rounding and clamp, ``schedules.compute.quantize_value``); the lowering
            runs it instead of the quantise kernel + ``prologue`` when ``x`` comes from the frontend's
            quantise chain.
        unscheduled: zero-argument callable giving ``main``'s compute before scheduling (database replay).
        tuning_key: zero-argument callable giving the PrimFunc whose record a database is asked for.
        with_epilogue: ``Epilogue -> PrimFunc``: ``main`` with fused elementwise steps
            (:mod:`schedules.epilogue`; extra parameters before the output), for kernels that store each
            output element once; ``None``: the kernel takes no epilogue (``passes.fuse_epilogue`` skips it).
        packed_input: what ``prologue_float`` writes (``schedules.packed_store.PackedStore``: the packed
            layout, lane dtype and quantisation), so that the producer of ``x`` can write it itself.
        with_packed_store: ``(Epilogue, PackedStore) -> PrimFunc | None``: ``main`` with the epilogue,
            storing its output quantised into another kernel's ``packed_input`` (``None`` from the callable:
            not this geometry; ``passes.fuse_epilogue`` then keeps the float output and the pack).
        task_name: readable name of the tuning task (``shiftcomp.tune`` and ``tuned_kernels`` use it).
        source: ``"manual"`` or ``"database"``.
    """

    main: tvm.tirx.PrimFunc
    weights: tuple[WeightInput, ...]
    prologue: tvm.tirx.PrimFunc | None = None
    prologue_out: tuple[tuple[int, ...], str] | None = None
    prologue_float: tvm.tirx.PrimFunc | None = None
    unscheduled: Callable[[], tvm.tirx.PrimFunc] | None = None
    tuning_key: Callable[[], tvm.tirx.PrimFunc] | None = None
    with_epilogue: Callable[[Any], tvm.tirx.PrimFunc] | None = None
    packed_input: Any = None
    with_packed_store: Callable[[Any, Any], tvm.tirx.PrimFunc | None] | None = None
    task_name: str = ""
    source: str = "manual"


def default_kernel(req: KernelRequest) -> KernelBuild:
    """Today's kernels: ``schedules.build_shift_kernel`` reading the int8 codes."""
    return KernelBuild(
        main=build_shift_kernel(req.kind, req.spec, req.target),
        weights=(WeightInput("codes", req.codes),),
        unscheduled=lambda: unscheduled_kernel(req.kind, req.spec),
        tuning_key=lambda: unscheduled_kernel(req.kind, req.spec, canonical=True),
        task_name=kernel_task_name(req.kind, req.spec),
    )
