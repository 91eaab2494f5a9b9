"""Shift kernels: TE compute (``compute.py``, target independent) + per-target schedules.

    from schedules import build_shift_kernel, DenseSpec, dense_weight_codes
    prim = build_shift_kernel("dense", DenseSpec(1, 512, 256, frac_bits=5, s0=-14), "llvm")

``build_shift_kernel`` returns a scheduled PrimFunc without ``global_symbol`` (ready for
``BlockBuilder.add_func`` next to legalized Relax ops; int64 indices). Parameters: ``X_q, codes, [bias],
out`` -- see :mod:`schedules.compute` for layouts and numerics, ``schedules/README.md`` for an overview.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Dict, Tuple, Union

import tvm

from .compute import (Conv2dSpec, DenseSpec, conv2d_codes_layout, conv2d_padded_og, conv2d_weight_codes,
                      dense_block, dense_codes_layout, dense_padded_n, dense_weight_codes, needs_exact_scale,
                      shift_conv2d, shift_conv2d_float, shift_dense, shift_dense_float, weight_codes)
from .target import resolve_target, target_key

__all__ = [
    "build_shift_kernel", "KINDS", "DenseSpec", "Conv2dSpec", "shift_dense", "shift_conv2d", "shift_dense_float",
    "shift_conv2d_float", "dense_weight_codes", "conv2d_weight_codes", "weight_codes", "dense_codes_layout",
    "conv2d_codes_layout", "dense_block", "dense_padded_n", "conv2d_padded_og", "resolve_target", "target_key",
    "schedule_for_target", "clear_cache", "canonical_spec", "unscheduled_kernel", "kernel_task_name",
]

#: kernel kinds -> (compute function, spec class)
KINDS = {
    "dense": (shift_dense, DenseSpec),
    "conv2d": (shift_conv2d, Conv2dSpec),
    "dense_float": (shift_dense_float, DenseSpec),
    "conv2d_float": (shift_conv2d_float, Conv2dSpec),
}

_GPU_KINDS = ("cuda", "rocm", "vulkan", "metal", "opencl", "webgpu")


def schedule_for_target(kind: str, prim: tvm.tirx.PrimFunc, spec: Union[DenseSpec, Conv2dSpec],
                        target: tvm.target.Target) -> tvm.tirx.PrimFunc:
    """Apply the default schedule for ``target.kind`` to an unscheduled shift PrimFunc of ``kind``.

    ``llvm`` -> :mod:`schedules.x86` (generic LLVM vectorisation; tuned for x86 AVX-512/AVX2); GPU kinds
    (cuda, rocm, vulkan, metal, opencl, webgpu) -> :mod:`schedules.cuda` thread binding.
    """
    tk = target.kind.name
    op = "dense" if kind.startswith("dense") else "conv2d"
    if tk == "llvm":
        from . import x86 as mod
    elif tk in _GPU_KINDS:
        from . import cuda as mod
    else:
        raise ValueError(f"no shift-kernel schedule for target kind {tk!r} (have llvm and GPU kinds)")
    return getattr(mod, "schedule_" + op)(prim, spec, target)


_CACHE: Dict[Tuple[str, Union[DenseSpec, Conv2dSpec], str], tvm.tirx.PrimFunc] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget the in-process kernel cache of :func:`build_shift_kernel`."""
    with _CACHE_LOCK:
        _CACHE.clear()


def build_shift_kernel(kind: str, spec: Union[DenseSpec, Conv2dSpec],
                       target: Union[str, dict, tvm.target.Target]) -> tvm.tirx.PrimFunc:
    """The scheduled shift kernel for ``target``.

    Args:
        kind: ``"dense"``, ``"conv2d"`` (fixed-point activations, bit-exact) or ``"dense_float"``,
            ``"conv2d_float"`` (float activations, exponent-add terms, float32 accumulation).
        spec: :class:`DenseSpec` (dense kinds) / :class:`Conv2dSpec` (conv kinds).
        target: anything :func:`schedules.target.resolve_target` takes (``"llvm"``, ``"cuda"``, dict, Target).

    Returns:
        The scheduled PrimFunc (no ``global_symbol``, int64 indices, ``s_tir`` attribute kept). Cached in
        process by ``(kind, spec, str(target))``; PrimFuncs are immutable, so sharing is safe.

    Raises:
        ValueError: unknown kind, wrong spec type, or a target kind without a schedule.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown shift kernel kind {kind!r}; expected one of {sorted(KINDS)}")
    if not isinstance(spec, KINDS[kind][1]):
        raise ValueError(f"kind {kind!r} needs a {KINDS[kind][1].__name__}, got {type(spec).__name__}")
    tgt = resolve_target(target)
    key = (kind, spec, str(tgt))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    fn, _ = KINDS[kind]
    prim = schedule_for_target(kind, fn(spec), spec, tgt)
    with _CACHE_LOCK:
        _CACHE[key] = prim
    return prim


def canonical_spec(spec: Union[DenseSpec, Conv2dSpec]) -> Union[DenseSpec, Conv2dSpec]:
    """The spec a kernel's tuning record is keyed by: ``s0`` and ``frac_bits`` zeroed.

    They only change the constant of the per-output scale ``2**(s0 - F)`` in the epilogue, never the loop
    nest, so one tuned schedule serves every layer of the same shape and accumulator.
    """
    return dataclasses.replace(spec, s0=0, frac_bits=0)


def unscheduled_kernel(kind: str, spec: Union[DenseSpec, Conv2dSpec], canonical: bool = False) -> tvm.tirx.PrimFunc:
    """The compute PrimFunc of a shift kernel before any schedule (what tuning searches over).

    With ``canonical`` the spec goes through :func:`canonical_spec` but keeps the real spec's epilogue form
    (exact ``ldexp`` or not), so the record found for it replays on the real kernel.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown shift kernel kind {kind!r}; expected one of {sorted(KINDS)}")
    fn, _ = KINDS[kind]
    use = canonical_spec(spec) if canonical else spec
    if kind.endswith("_float"):
        return fn(use)
    return fn(use, exact_scale=needs_exact_scale(spec))


def kernel_task_name(kind: str, spec: Union[DenseSpec, Conv2dSpec]) -> str:
    """A readable, stable name of a shift kernel's tuning task (shape, accumulator, bias)."""
    if isinstance(spec, Conv2dSpec):
        s = (f"shift_{kind}_n{spec.batch}_c{spec.in_channels}_{spec.height}x{spec.width}_o{spec.out_channels}"
             f"_k{spec.kernel_h}x{spec.kernel_w}_s{spec.stride[0]}_g{spec.groups}_{spec.acc_dtype}")
    else:
        s = f"shift_{kind}_m{spec.batch}_k{spec.in_features}_n{spec.out_features}_{spec.acc_dtype}"
    return s + ("_b" if spec.has_bias else "")
