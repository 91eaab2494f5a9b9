"""The benchmarked backends: PyTorch eager, torch.compile, TVM float (the float twin), shiftcomp."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax

from schedules.target import resolve_target
from shiftcomp.baseline import import_float
from shiftcomp.compiler import compile as compile_model
from shiftcomp.tune.records import apply_database, scheduled_names

__all__ = ["BACKENDS", "Built", "build_torch", "build_torch_compile", "build_tvm_float", "build_shiftcomp"]

BACKENDS: tuple[str, ...] = ("shiftcomp", "tvm-float", "torch", "torch.compile")


@dataclass
class Built:
    """A ready-to-time backend: ``run()`` does one inference; ``build_s`` is the build/compile time."""

    run: Callable[[], Any]
    build_s: float
    tuned: bool | str = "n/a"
    output: Callable[[], torch.Tensor] | None = None
    note: str = ""


def build_torch(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Built:
    """PyTorch eager float32."""
    model = model.eval()

    def run() -> Any:
        with torch.inference_mode():
            return model(*inputs)

    return Built(run, 0.0, "n/a", lambda: run().detach().float())


def build_torch_compile(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Built:
    """``torch.compile`` (inductor, default mode); the first call (compilation) is the build time."""
    torch._dynamo.reset()
    cm = torch.compile(model.eval())
    t0 = time.perf_counter()
    with torch.inference_mode():
        cm(*inputs)
    bs = time.perf_counter() - t0

    def run() -> Any:
        with torch.inference_mode():
            return cm(*inputs)

    return Built(run, bs, "n/a", lambda: run().detach().float())


def _vm_runner(ex: Any, inputs: Sequence[torch.Tensor]) -> tuple[Callable[[], Any], Callable[[], torch.Tensor]]:
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    tv = [tvm.runtime.tensor(np.ascontiguousarray(x.detach().numpy()), dev) for x in inputs]
    f = vm["main"]

    def run() -> Any:
        return f(*tv)

    def output() -> torch.Tensor:
        out = run()
        if not hasattr(out, "numpy"):
            out = out[0]
        return torch.from_numpy(out.numpy().copy())

    return run, output


def build_tvm_float(model: nn.Module, inputs: Sequence[torch.Tensor], target: Any = "llvm",
                    tuned: Any = "auto") -> Built:
    """The float network (shift layers as float32 conv/linear) through TVM, same pipeline as tuning.

    ``tuned``: database (see :func:`shiftcomp.tune.apply_database`); ``False`` builds untuned.
    Untuned float PrimFuncs are TVM's legalized default loops (no schedule), i.e. a weak baseline: the
    fair comparison is with both sides tuned to the same budget.
    """
    tgt = resolve_target(target)
    t0 = time.perf_counter()
    mod = apply_database(import_float(model, inputs), tgt, tuned)
    tuned = bool(scheduled_names(mod))
    ex = tvm.compile(mod, target=tgt)
    bs = time.perf_counter() - t0
    run, out = _vm_runner(ex, inputs)
    return Built(run, bs, tuned, out)


def build_shiftcomp(model: nn.Module, inputs: Sequence[torch.Tensor], target: Any = "llvm",
                    tuned: Any = "auto") -> Built:
    """The shift model through ``shiftcomp.compile(tuned=tuned)`` (the database serves shift and glue kernels).

    Timed through the compiled model's Relax VM on pre-converted inputs (``CompiledModel.vm_runner``).
    ``build_s`` is the whole compile time.
    """
    tgt = resolve_target(target)
    t0 = time.perf_counter()
    compiled = compile_model(model, tuple(inputs), tgt, tuned=tuned)
    bs = time.perf_counter() - t0
    out = lambda: compiled(*inputs).detach().float()  # noqa: E731
    return Built(compiled.vm_runner(*inputs), bs, bool(compiled.tuned_kernels), out)


# ------------------------------------------------------------------------------------------------
# running suites
# ------------------------------------------------------------------------------------------------
