"""Derived constant inputs: kernel inputs rebuilt from a layer's weight codes when an artifact is loaded.

A kernel may read, besides ``x``, constant arrays computed from the layer's weights (segment lists, plan
arrays, ...). The artifact does not store those arrays: it stores the layer's bit-packed codes once and,
per derived input, the *name* of a registered derivation and its JSON parameters. ``shiftcomp.load``
rebuilds the array with the same function the compiler used::

    @register_derivation("sum_then_shift.segments", module=__name__)
    def segments(codes: np.ndarray, *, block: int) -> np.ndarray:   # codes: int8, PyTorch weight layout
        ...

    WeightInput("segments", segments(codes, block=8), Derivation("sum_then_shift.segments", {"block": 8}))

``codes`` are the layer's logical codes ``sign * (shift - s0 + 1)`` in the PyTorch weight layout (int8;
0 = zero weight), see docs/numerics.md. The export checks that the derivation reproduces the array the
kernel was compiled with, so a derivation that is not a pure function of the codes is caught at export.
This module needs numpy only (the artifact loader imports it with a runtime-only TVM).
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Derivation", "register_derivation", "derivation", "ALLOWED_MODULE_PREFIXES", "MOVED_MODULES"]

#: a derivation's registering module is imported at load time only from these packages
ALLOWED_MODULE_PREFIXES = ("passes.", "schedules.", "shiftcomp.")
#: registering modules recorded by older artifacts -> the numpy-only module that registers those names now
#: (the old ones build kernels and import the TVM compiler, which a runtime-only TVM lacks)
MOVED_MODULES = {"passes.sum_then_shift_family": "passes.sum_then_shift_plan",
                 "passes.table_gemv_family": "passes.table_gemv_inputs"}

_REGISTRY: dict[str, Callable[..., np.ndarray]] = {}


def register_derivation(name: str, module: str | None = None) -> Callable[[Callable[..., np.ndarray]],
                                                                         Callable[..., np.ndarray]]:
    """Decorator: register ``fn(codes, **params) -> np.ndarray`` under ``name`` (unique)."""
    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"derivation {name!r} is already registered")
        _REGISTRY[name] = fn
        fn.derivation_module = module or fn.__module__  # type: ignore[attr-defined]
        return fn
    return deco


def derivation(name: str, module: str | None = None) -> Callable[..., np.ndarray]:
    """The registered function ``name``; imports ``module`` first when the name is not registered yet."""
    if name not in _REGISTRY and module:
        module = MOVED_MODULES.get(module, module)
        if not module.startswith(ALLOWED_MODULE_PREFIXES):
            raise ValueError(f"derivation {name!r}: module {module!r} is outside {ALLOWED_MODULE_PREFIXES}")
        importlib.import_module(module)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no derivation named {name!r} is registered (module {module!r})") from None


@dataclasses.dataclass(frozen=True)
class Derivation:
    """How to rebuild one constant kernel input from the layer's codes: ``fn(codes, **params)``.

    Attributes:
        fn: the registered name.
        params: JSON-serialisable keyword arguments.
        module: the module that registers ``fn`` (imported at load time if needed).
    """

    fn: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    module: str | None = None

    def apply(self, codes: np.ndarray) -> np.ndarray:
        """Rebuild the array from the layer's logical int8 codes."""
        f = derivation(self.fn, self.module or getattr(_REGISTRY.get(self.fn), "derivation_module", None))
        return np.ascontiguousarray(f(np.asarray(codes, np.int8), **self.params))

    def to_json(self) -> dict[str, Any]:
        """Manifest form (``Derivation.from_json`` inverts it)."""
        module = self.module or getattr(_REGISTRY.get(self.fn), "derivation_module", None)
        return {"fn": self.fn, "params": dict(self.params), "module": module}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Derivation":
        """Inverse of :meth:`to_json`."""
        return cls(str(d["fn"]), dict(d.get("params") or {}), d.get("module"))
