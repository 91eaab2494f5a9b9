"""The sum-then-shift kernels' plan arrays as derivations of the layer's codes (for the packed artifact), numpy
only.

A sum-then-shift kernel (:mod:`passes.sum_then_shift_family`) reads, besides the packed activations, int32 plan
arrays (segment pointers, levels, term offsets ...) computed from the codes by one of the ``derive_*`` functions
of :mod:`schedules.sum_then_shift_layout`. The artifact stores the codes; ``shiftcomp.load`` rebuilds each
array with :func:`plan_input` (:mod:`passes.derived_inputs`). This module and what it imports need numpy only,
so a runtime-only TVM can load the artifact; artifacts written before the split name
``passes.sum_then_shift_family`` as the registering module, which :mod:`passes.derived_inputs` maps here.
"""
from __future__ import annotations

import functools
import json

import numpy as np

from schedules import sum_then_shift_layout as layout
from schedules.specs import spec_from_json

from .derived_inputs import register_derivation

__all__ = ["PLAN_INPUT", "PLAN_INPUT_NAMES", "plan_input"]

#: registered name of the derivation that rebuilds one plan array from the codes
PLAN_INPUT = "sum_then_shift.plan_input"
#: names of the plan arrays, by the ``derive_*`` function that makes them (kernel input order)
PLAN_INPUT_NAMES = {
    "derive_conv2d_inputs": ("seg_ptr", "seg_level", "seg_npos", "seg_tptr", "term_offset"),
    "derive_dense_inputs": ("seg_ptr", "seg_level", "seg_npos", "seg_tptr", "term_offset"),
    "derive_depthwise_inputs": ("tap_offset", "tap_level", "tap_neg"),
    "derive_cuda_conv2d_inputs": ("seg_ptr", "seg_level", "seg_npos", "seg_tptr", "term"),
}


@functools.lru_cache(maxsize=8)
def _plan_arrays(codes_bytes: bytes, shape: tuple[int, ...], key: str) -> tuple[np.ndarray, ...]:
    """All plan arrays of one layer (cached: the artifact asks for them one at a time)."""
    p = json.loads(key)
    fn = p["derive"]
    if fn not in PLAN_INPUT_NAMES:
        raise ValueError(f"unknown sum-then-shift derive function {fn!r}")
    codes = np.frombuffer(codes_bytes, np.int8).reshape(shape)
    return tuple(getattr(layout, fn)(spec_from_json(p["spec"]), codes, **p["keywords"]))


@register_derivation(PLAN_INPUT)
def plan_input(codes: np.ndarray, *, derive: str, spec: dict, keywords: dict, index: int) -> np.ndarray:
    """Plan array ``index`` of ``schedules.sum_then_shift_layout.<derive>(spec, codes, **keywords)``."""
    key = json.dumps({"derive": derive, "spec": spec, "keywords": keywords}, sort_keys=True)
    c = np.ascontiguousarray(codes, np.int8)
    return _plan_arrays(c.tobytes(), tuple(c.shape), key)[index]
