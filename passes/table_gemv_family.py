"""The table GEMV kernel family: ``schedules.table_gemv`` behind the kernel-provider interface.

Batch-1 fixed-point dense layers on x86 (AVX2 / AVX-512BW) with 8-bit activations and at most 15 shift levels
get ``table_gemv`` (per-input byte tables read by ``vpshufb``):

* ``prologue`` = the kernel's ``table`` pre-kernel (int32 ``x_q`` -> per-input byte tables), run after the
  ``shiftcomp_quantize`` prologue;
* ``main`` = the table kernel, reading the tables, the code bytes and the per-output negative counts;
* ``weights`` = the codes (bytes, or nibbles with the scalar tail) and their constants, each with a
  :class:`~passes.derived_inputs.Derivation` so that ``shiftcomp.load`` rebuilds them from the bit-packed codes
  (registered by the numpy-only :mod:`passes.table_gemv_inputs`, re-exported here: a runtime-only TVM can
  load the artifact).

Every other layer (batch > 1, float activations, 16-bit activations, more shift levels, other targets) gets
``fallback(req)`` (``passes.sum_then_shift_family.sum_then_shift_kernel``: sum-then-shift, or the per-term
column-block kernel at batch 1).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from schedules import table_gemv as tg
from schedules.specs import spec_to_json

from .derived_inputs import Derivation
from .kernel_build import KernelBuild, KernelRequest, WeightInput
from .sum_then_shift_family import _shape_name, _with_root_block, sum_then_shift_kernel
from .table_gemv_inputs import TABLE_INPUT, TABLE_INPUT_NAMES, table_input

__all__ = ["TABLE_INPUT", "TABLE_INPUT_NAMES", "applies", "table_gemv_kernel", "table_input"]

log = logging.getLogger("shiftcomp.kernels")


def applies(req: KernelRequest) -> bool:
    """Whether the layer is a candidate (before the codes and the bound are checked)."""
    return (req.kind == "dense" and req.target.kind.name == "llvm" and req.info.act_bits is not None
            and int(req.spec.batch) == 1)


def table_gemv_kernel(req: KernelRequest,
                      fallback: Callable[[KernelRequest], KernelBuild] = sum_then_shift_kernel) -> KernelBuild:
    """The table GEMV build of a batch-1 fixed-point dense layer, else ``fallback(req)``."""
    if not applies(req):
        return fallback(req)
    why = tg.applicable(req.spec, req.logical_codes, req.target, tuple(req.info.act_bits))
    if why:
        log.info("layer %s: no table GEMV kernel (%s)", req.info.layer, why)
        return fallback(req)
    try:
        k = tg.build(req.spec, req.logical_codes, req.target, act_bits=tuple(req.info.act_bits))
    except ValueError as e:   # a bound only a wider accumulator meets
        log.info("layer %s: no table GEMV kernel (%s)", req.info.layer, e)
        return fallback(req)
    params = {"spec": spec_to_json(req.spec), "lanes": int(k.lanes), "variant": k.variant}
    weights = tuple(WeightInput(name, arr, Derivation(TABLE_INPUT, {**params, "index": i}))
                    for i, (name, arr) in enumerate(zip(TABLE_INPUT_NAMES[k.variant], k.weight_inputs)))
    return KernelBuild(main=_with_root_block(k.main), weights=weights, prologue=_with_root_block(k.table),
                       prologue_out=(tuple(k.table_shape), k.table_dtype),
                       task_name=f"table_gemv_dense_{_shape_name(req.spec)}_{k.variant}_p{k.planes}")
