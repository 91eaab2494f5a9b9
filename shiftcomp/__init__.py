"""shiftcomp: a compiler for multiplication-less (DeepShift) neural networks.

PyTorch side (imported eagerly, no TVM)::

    import shiftcomp as sc
    cfg = sc.ShiftConfig(mode="Q", weight_bits=5, act_bits=(3, 5))
    model = sc.convert(model, cfg)                 # nn.Conv2d / nn.Linear -> sc.nn.Conv2dShift / LinearShift
    with sc.reference.exact(model.eval()):         # bit-exact integer reference forward
        y = model(x)

Compiler side (loaded on first use; imports TVM)::

    compiled = sc.compile(model, (x,), target="llvm")   # tuned="auto": this target's database if shipped
    sc.verify(compiled, model, (x,)); compiled.export("model.so"); m = sc.load("model.so")
    rows = sc.benchmark(model, (x,), baselines=["torch", "tvm-float"])

Adder networks: ``sc.convert(model, sc.AdderConfig(act_bits=(3, 5)))`` (AdderNet: ``sc.nn.Conv2dAdder`` /
``LinearAdder``) and ``sc.convert(model, sc.ShiftAddConfig(shift=..., adder=...))`` (ShiftAddNet);
``sc.ShiftConfig(..., zero_free=True)`` gives DenseShift's zero-free codes.

Modules: :mod:`shiftcomp.config` (``ShiftConfig``), :mod:`shiftcomp.adder_config` (``AdderConfig``,
``ShiftAddConfig``), :mod:`shiftcomp.adder` (adder layers), :mod:`shiftcomp.quant` (quantizers),
:mod:`shiftcomp.nn` (shift layers), :mod:`shiftcomp.convert` (``convert``), :mod:`shiftcomp.reference`
(exact integer reference). Note: ``shiftcomp.convert`` is the *function*; import module-level helpers with
``from shiftcomp.convert import convertible_layers``.
"""
from __future__ import annotations

from shiftcomp import nn, quant, reference
from shiftcomp.threads import ensure_tvm_threads
from shiftcomp.adder_config import AdderConfig, ShiftAddConfig
from shiftcomp.config import ShiftConfig
from shiftcomp.convert import convert
from shiftcomp.decompose import DecomposeConfig, decompose, recompose

__all__ = ["ShiftConfig", "AdderConfig", "ShiftAddConfig", "convert", "nn", "quant", "reference", "DecomposeConfig",
           "decompose", "recompose"]

__version__ = "0.1.0"

ensure_tvm_threads()   # before TVM can start its thread pool (shiftcomp/threads.py says why)

# The compiler API imports TVM (seconds), so it loads on first use, never at `import shiftcomp` time.
_LAZY = {
    "compile": ("shiftcomp.compiler", "compile"),
    "CompiledModel": ("shiftcomp.compiler", "CompiledModel"),
    "load": ("shiftcomp.artifact", "load"),
    "verify": ("shiftcomp.verification", "verify"),
    "benchmark": ("shiftcomp.bench", "benchmark"),
    "dynamo_report": ("shiftcomp.dynamo", "dynamo_report"),
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shiftcomp' has no attribute {name!r}")
