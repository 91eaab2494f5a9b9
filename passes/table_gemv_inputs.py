"""The table GEMV kernel's weight inputs as derivations of the layer's codes (for the packed artifact), numpy
only.

A table GEMV kernel (:mod:`passes.table_gemv_family`) reads the code bytes (or nibbles and the scalar tail)
and their constants, computed from the codes by :mod:`schedules.table_gemv_layout`. The artifact stores the
codes; ``shiftcomp.load`` rebuilds each input with :func:`table_input` (:mod:`passes.derived_inputs`). This
module and what it imports need numpy only, so a runtime-only TVM can load the artifact; artifacts written
before the split name ``passes.table_gemv_family`` as the registering module, which
:mod:`passes.derived_inputs` maps here.
"""
from __future__ import annotations

import functools
import json

import numpy as np

from schedules import table_gemv_layout as layout
from schedules.specs import spec_from_json

from .derived_inputs import register_derivation

__all__ = ["TABLE_INPUT", "TABLE_INPUT_NAMES", "table_input"]

#: registered name of the derivation that rebuilds one kernel input from the codes
TABLE_INPUT = "table_gemv.input"
#: the kernel inputs per variant (``schedules.table_gemv_layout.derive_inputs`` / ``derive_nibble_inputs`` /
#: ``derive_gather_tail_inputs``), in order
TABLE_INPUT_NAMES = {"byte": ("code_bytes", "nneg"), "nibble": ("code_nibbles", "tail_ptr", "tail_term", "base"),
                     "nibble_gather": ("code_nibbles", "tail_ptr", "tail_term", "base")}
#: the derivation of each variant's inputs (artifacts name the variant, so a new layout is a new variant)
_DERIVE = {"byte": layout.derive_inputs, "nibble": layout.derive_nibble_inputs,
           "nibble_gather": layout.derive_gather_tail_inputs}


@functools.lru_cache(maxsize=8)
def _inputs(codes_bytes: bytes, shape: tuple[int, ...], key: str) -> tuple[np.ndarray, ...]:
    p = json.loads(key)
    codes = np.frombuffer(codes_bytes, np.int8).reshape(shape)
    return tuple(_DERIVE[p["variant"]](spec_from_json(p["spec"]), codes, lanes=int(p["lanes"])))


@register_derivation(TABLE_INPUT)
def table_input(codes: np.ndarray, *, spec: dict, lanes: int, variant: str, index: int) -> np.ndarray:
    """Input ``index`` of the variant's ``schedules.table_gemv_layout.derive_*inputs(spec, codes, lanes)``."""
    key = json.dumps({"spec": spec, "lanes": int(lanes), "variant": variant}, sort_keys=True)
    c = np.ascontiguousarray(codes, np.int8)
    return _inputs(c.tobytes(), tuple(c.shape), key)[index]
