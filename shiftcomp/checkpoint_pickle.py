"""Reading pickled PyTorch files whose classes are not importable here, without running their code.

Training scripts pickle whole objects into their files: DeepShift's ``checkpoint.pth.tar`` holds its
``lr_scheduler`` (whose optimizer may be DeepShift's own ``optim.RAdam``), and its ``model.pth`` is the whole
model (classes such as ``__main__.ConvMNIST`` or ``deepshift.modules.Conv2dShift``). ``torch.load`` with
``weights_only=True`` refuses those files and with ``weights_only=False`` needs every class importable (and
runs their code). :func:`load_pickled` does neither: tensors, parameters and plain containers load as usual,
every other class becomes a :class:`PickledObject` that records its module, name and pickled state, which
:func:`object_state` and :func:`module_tree_state_dict` read.
"""
from __future__ import annotations

import builtins
import collections
import os
import pickle
import types
from pathlib import Path
from typing import Any

import torch

__all__ = ["PickledObject", "load_pickled", "object_state", "class_path", "module_tree_state_dict",
           "module_tree_layers"]

# Classes rebuilt for real: plain containers and torch's tensor machinery (no user code runs).
_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str",
                  "bytes", "bytearray", "slice", "range", "object"}
_SAFE_COLLECTIONS = {"OrderedDict", "defaultdict", "Counter", "deque"}


class PickledObject:
    """Stand-in for an instance of a class that was not imported; ``class_path(obj)`` names the class."""

    _pickled_module = ""
    _pickled_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledObject":
        obj = object.__new__(cls)
        obj.__dict__["_pickled_args"] = args
        obj.__dict__["_pickled_state"] = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # a REDUCE call: cls(*args)
        self.__dict__["_pickled_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_pickled_state"] = state

    def __call__(self, *args: Any, **kwargs: Any) -> "PickledObject":  # a pickled callable used as a factory
        return _stub_class(self._pickled_module, self._pickled_name + "()")(*args)

    def __repr__(self) -> str:
        return f"<pickled {self._pickled_module}.{self._pickled_name}>"


_STUBS: dict[tuple[str, str], type] = {}


def _stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STUBS:
        _STUBS[key] = type(name.replace(".", "_") or "Unnamed", (PickledObject,),
                           {"_pickled_module": module, "_pickled_name": name, "__module__": __name__})
    return _STUBS[key]


def _is_safe(module: str, name: str) -> Any:
    """The real object for an allowed global, else ``None``."""
    if module == "builtins" and name in _SAFE_BUILTINS:
        return getattr(builtins, name)
    if module == "collections" and name in _SAFE_COLLECTIONS:
        return getattr(collections, name)
    if module == "torch._utils" and name.startswith("_rebuild"):
        return getattr(torch._utils, name, None)
    if module == "torch":
        obj = getattr(torch, name, None)
        if isinstance(obj, (torch.dtype, type(torch.Size))) or obj is torch.Size or obj is torch.device:
            return obj
        if isinstance(obj, type) and name.endswith("Storage"):
            return obj
    if module == "torch.nn.parameter" and name in ("Parameter", "Buffer"):
        return getattr(torch.nn.parameter, name)
    if module == "torch.serialization" and name == "_get_layout":
        return getattr(torch.serialization, name)
    if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage", "_load_from_bytes"):
        return getattr(torch.storage, name, None)
    return None


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2 spells builtins the Python 2 way
            module = "builtins"
        real = _is_safe(module, name)
        if real is not None:
            return real
        return _stub_class(module, name)


_PICKLE_MODULE = types.ModuleType("shiftcomp_stub_pickle")
_PICKLE_MODULE.Unpickler = _StubUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = lambda f, **kw: _StubUnpickler(f, **kw).load()  # type: ignore[attr-defined]
_PICKLE_MODULE.__dict__["loads"] = pickle.loads


def load_pickled(path: str | os.PathLike) -> Any:
    """``torch.load`` of ``path`` on the CPU with unknown classes replaced by :class:`PickledObject` stand-ins.

    Raises whatever ``torch.load`` raises for a file that is not a PyTorch file (callers map it to a message).
    """
    return torch.load(Path(path), map_location="cpu", weights_only=False, pickle_module=_PICKLE_MODULE)


def class_path(obj: Any) -> str:
    """``module.Name`` of the class a pickled object was an instance of (real or stand-in)."""
    if isinstance(obj, PickledObject):
        return f"{obj._pickled_module}.{obj._pickled_name}"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def object_state(obj: Any) -> dict[str, Any]:
    """The attribute dict a pickled object carried (``{}`` if none)."""
    if isinstance(obj, PickledObject):
        state = obj._pickled_state
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slot state)
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            return merged
        return dict(state) if isinstance(state, dict) else {}
    return dict(getattr(obj, "__dict__", {}))


def module_tree_layers(root: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(fqn, obj)`` for ``root`` and every pickled submodule below it (``_modules``, depth first)."""
    out = [(prefix.rstrip("."), root)]
    for name, child in (object_state(root).get("_modules") or {}).items():
        if child is not None:
            out.extend(module_tree_layers(child, f"{prefix}{name}."))
    return out


def module_tree_state_dict(root: Any) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a pickled ``nn.Module`` tree: parameters and persistent buffers, in module order."""
    out: dict[str, torch.Tensor] = {}
    for fqn, obj in module_tree_layers(root):
        st = object_state(obj)
        prefix = f"{fqn}." if fqn else ""
        for name, t in (st.get("_parameters") or {}).items():
            if t is not None:
                out[prefix + name] = t.detach() if isinstance(t, torch.Tensor) else t
        skip = set(st.get("_non_persistent_buffers_set") or ())
        for name, t in (st.get("_buffers") or {}).items():
            if t is not None and name not in skip:
                out[prefix + name] = t
    return out
