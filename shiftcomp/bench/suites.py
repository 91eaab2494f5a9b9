"""Running the layer and model suites: one row per (case, batch, backend)."""
from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from shiftcomp.baseline import float_twin
from shiftcomp.energy import model_layer_ops
from shiftcomp.models import INPUT_SHAPES, get_model
from shiftcomp.tune.measure import physical_cores

from .backends import (BACKENDS, Built, build_shiftcomp, build_torch, build_torch_compile, build_tvm_float)
from .cases import DEFAULT_MODELS, LayerCase, default_shift_config, find_cases, to_shift
from .timing import Timing, set_threads, time_callable

__all__ = ["ROW_FIELDS", "DEEPSHIFT_CPU_MS", "Rows", "bench_model", "run_layer_bench", "run_model_bench"]


#: Original DeepShift CPU kernel (their C++ loop timed, 1 thread, medians, this machine class), with the
#: torch float32 time measured in the same session; milliseconds (see BENCHMARKS.md, "DeepShift CPU kernel").
DEEPSHIFT_CPU_MS: dict[str, dict[str, float]] = {
    "conv64x64@56": {"deepshift_ms": 1000.0, "torch_ms": 3.5},
    "conv16x16@32": {"deepshift_ms": 17.0, "torch_ms": 0.16},
    "linear1x4096x4096": {"deepshift_ms": 215.0, "torch_ms": 5.8},
    "linear64x512x10": {"deepshift_ms": 0.86, "torch_ms": 0.029},
}

ROW_FIELDS: tuple[str, ...] = (
    "suite", "case", "batch", "backend", "tuned", "threads", "median_ms", "q1_ms", "q3_ms", "min_ms",
    "repeats", "number", "build_s", "rel_torch", "speedup_vs_deepshift", "max_abs_err", "macs",
    "gops", "note",
)




class Rows(list):
    """The rows of a run (dicts with :data:`ROW_FIELDS`); ``errors`` lists what failed, one line each."""

    def __init__(self, rows: Sequence[dict[str, Any]] = (), errors: Sequence[str] = ()) -> None:
        super().__init__(rows)
        self.errors = list(errors)


def _row(suite: str, case: str, batch: int, backend: str, threads: int, timing: Timing | None,
         built: Built | None, macs: int | None, note: str = "", err: float | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {k: None for k in ROW_FIELDS}
    r.update(suite=suite, case=case, batch=batch, backend=backend, threads=threads, macs=macs, note=note,
             max_abs_err=err)
    if built is not None:
        r.update(tuned=built.tuned, build_s=round(built.build_s, 3))
        if built.note:
            r["note"] = (note + "; " if note else "") + built.note
    if timing is not None:
        r.update(median_ms=timing.median_ms, q1_ms=timing.q1_ms, q3_ms=timing.q3_ms, min_ms=timing.min_ms,
                 repeats=timing.repeats, number=timing.number)
        if macs:
            r["gops"] = macs / (timing.median_ms * 1e-3) / 1e9
    return r


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Fill ``rel_torch`` (latency / torch latency of the same case+batch) and ``speedup_vs_deepshift``."""
    torch_ms = {(r["suite"], r["case"], r["batch"]): r["median_ms"] for r in rows
                if r["backend"] == "torch" and r["median_ms"]}
    ds = {(r["suite"], r["case"], r["batch"]): r["median_ms"] for r in rows
          if r["backend"] == "deepshift-cpu*" and r["median_ms"]}
    for r in rows:
        key = (r["suite"], r["case"], r["batch"])
        if r["median_ms"] and key in torch_ms:
            r["rel_torch"] = r["median_ms"] / torch_ms[key]
        if r["median_ms"] and key in ds and r["backend"] != "deepshift-cpu*":
            r["speedup_vs_deepshift"] = ds[key] / r["median_ms"]


def _safe(fn: Callable[[], Built], errors: list[str], label: str) -> Built | None:
    try:
        return fn()
    except Exception as e:
        errors.append(f"{label}: {type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stderr)
        return None


def _bench_one(suite: str, case: str, batch: int, float_model: nn.Module, shift_model: nn.Module | None,
               inputs: Sequence[torch.Tensor], backends: Sequence[str], target: Any, tuned: Any,
               threads: int, warmup: int, repeats: int, min_repeat_ms: float, macs: int | None,
               errors: list[str], log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ref: torch.Tensor | None = None
    if shift_model is not None:
        with torch.inference_mode():
            ref = shift_model(*inputs).detach().float()
    builders: dict[str, Callable[[], Built]] = {
        "torch": lambda: build_torch(float_model, inputs),
        "torch.compile": lambda: build_torch_compile(float_model, inputs),
        "tvm-float": lambda: build_tvm_float(shift_model if shift_model is not None else float_model, inputs,
                                             target, tuned),
        "shiftcomp": lambda: build_shiftcomp(shift_model, inputs, target, tuned),
    }
    for b in backends:
        if b == "shiftcomp" and shift_model is None:
            continue
        built = _safe(builders[b], errors, f"{suite}/{case}/b{batch}/{b} build")
        if built is None:
            rows.append(_row(suite, case, batch, b, threads, None, None, macs, note="build failed"))
            continue
        err = None
        if b == "shiftcomp" and ref is not None and built.output is not None:
            try:
                err = float((built.output().reshape(ref.shape) - ref).abs().max())
            except Exception as e:  # pragma: no cover
                errors.append(f"{suite}/{case}/{b} output check: {e}")
        timing = None
        try:
            timing = time_callable(built.run, warmup=warmup, repeats=repeats, min_repeat_ms=min_repeat_ms)
        except Exception as e:
            errors.append(f"{suite}/{case}/b{batch}/{b} run: {type(e).__name__}: {e}")
        rows.append(_row(suite, case, batch, b, threads, timing, built, macs, err=err))
        if timing is not None:
            log(f"{suite:5s} {case:20s} b={batch:<3d} {b:14s} {timing.median_ms:10.4f} ms "
                f"(build {built.build_s:.1f} s, tuned={built.tuned})")
    return rows


def bench_model(suite: str, case: str, shift_model: nn.Module, inputs: Sequence[torch.Tensor],
                backends: Sequence[str], *, target: Any = "llvm", tuned: Any = "auto",
                float_model: nn.Module | None = None, threads: int, warmup: int = 2, repeats: int = 10,
                min_repeat_ms: float = 20.0, log: Callable[[str], None] = print) -> Rows:
    """One shift model against the given backends (the torch ones run ``float_model``, default the
    float twin of ``shift_model``); rows with ratios to ``torch`` when it ran."""
    set_threads(threads)
    errors: list[str] = []
    fm = float_model if float_model is not None else float_twin(shift_model)
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1
    rows = _bench_one(suite, case, batch, fm, shift_model, inputs, backends, target, tuned, threads, warmup,
                      repeats, min_repeat_ms, None, errors, log)
    _add_ratios(rows)
    return Rows(rows, errors)


def run_layer_bench(cases: Sequence[LayerCase] | Sequence[str] | None = None,
                    backends: Sequence[str] = BACKENDS, target: Any = "llvm", tuned: Any = "auto",
                    threads: int | None = None, warmup: int = 3, repeats: int = 15,
                    min_repeat_ms: float = 20.0, config: Any = None,
                    log: Callable[[str], None] = print) -> Rows:
    """Per-layer benchmark. Returns rows (dicts with :data:`ROW_FIELDS`), incl. ``deepshift-cpu*`` constants.

    Args:
        cases: :class:`LayerCase` objects or their names (default :data:`DEFAULT_LAYER_CASES`).
        backends: subset of :data:`BACKENDS`.
        target: compile target (``"llvm"`` = this CPU).
        tuned: the tuning database, as ``shiftcomp.compile(tuned=...)`` takes it ("auto", None, a folder).
        threads: threads for every backend (default: physical cores).
        warmup, repeats, min_repeat_ms: see :func:`time_callable`.
        config: ``ShiftConfig`` for the shift layers (default :func:`default_shift_config`).
    """
    threads = threads or physical_cores()
    set_threads(threads)
    if cases is None or (len(cases) and isinstance(cases[0], str)):
        cases = find_cases(cases)  # type: ignore[arg-type]
    errors: list[str] = []
    rows: list[dict[str, Any]] = []
    cfg = None
    if "shiftcomp" in backends or "tvm-float" in backends:
        cfg = config if config is not None else _safe_cfg(errors)
    for c in cases:  # type: ignore[union-attr]
        fm = c.float_module()
        sm = None
        if cfg is not None:
            try:
                sm = to_shift(fm, cfg)
            except Exception as e:
                errors.append(f"layer/{c.name} convert: {type(e).__name__}: {e}")
        rows += _bench_one("layer", c.name, c.batch, fm, sm, c.example_inputs(), backends, target, tuned,
                           threads, warmup, repeats, min_repeat_ms, c.macs, errors, log)
        if c.deepshift_key:
            d = DEEPSHIFT_CPU_MS[c.deepshift_key]
            r = _row("layer", c.name, c.batch, "deepshift-cpu*", 1,
                     Timing(d["deepshift_ms"], d["deepshift_ms"], d["deepshift_ms"], d["deepshift_ms"], 0, 0),
                     None, c.macs, note=f"measured constant (BENCHMARKS.md, 1 thread; torch then "
                                        f"{d['torch_ms']} ms), not run here")
            r["repeats"] = r["number"] = None
            rows.append(r)
    _add_ratios(rows)
    for e in errors:
        log("ERROR " + e)
    return Rows(rows, errors)


def _safe_cfg(errors: list[str]) -> Any:
    try:
        return default_shift_config()
    except Exception as e:
        errors.append(f"ShiftConfig unavailable: {e}")
        return None


def run_model_bench(models: Sequence[str] = DEFAULT_MODELS, batches: Sequence[int] = (1, 64),
                    backends: Sequence[str] = BACKENDS, target: Any = "llvm", tuned: Any = "auto",
                    threads: int | None = None, warmup: int = 2, repeats: int = 10,
                    min_repeat_ms: float = 50.0, config: Any = None, num_classes: int = 10,
                    log: Callable[[str], None] = print) -> Rows:
    """End-to-end benchmark of zoo models (``shiftcomp.models.get_model``) at the given batch sizes.

    ``torch``/``torch.compile`` run the float model, ``tvm-float`` the float twin of the shift model
    (same weight values as float32), ``shiftcomp`` the shift model. ``build_s`` of ``shiftcomp`` is the
    full ``shiftcomp.compile`` time. Returns rows (:data:`ROW_FIELDS`).
    """
    threads = threads or physical_cores()
    set_threads(threads)
    errors: list[str] = []
    rows: list[dict[str, Any]] = []
    cfg = config if config is not None else _safe_cfg(errors)
    for name in models:
        torch.manual_seed(0)
        fm = get_model(name, num_classes=num_classes).eval()
        sm = None
        try:
            sm = to_shift(fm, cfg) if cfg is not None else None
        except Exception as e:
            errors.append(f"model/{name} convert: {type(e).__name__}: {e}")
        for b in batches:
            gen = torch.Generator().manual_seed(b)
            inputs = (torch.randn(b, *INPUT_SHAPES[name], generator=gen),)
            try:
                macs = sum(l.macs for l in model_layer_ops(fm, inputs))
            except Exception:
                macs = None
            rows += _bench_one("model", name, b, fm, sm, inputs, backends, target, tuned, threads, warmup,
                               repeats, min_repeat_ms, macs, errors, log)
    _add_ratios(rows)
    for e in errors:
        log("ERROR " + e)
    return Rows(rows, errors)
