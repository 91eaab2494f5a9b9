"""Benchmark harness: shiftcomp vs TVM float vs PyTorch eager vs torch.compile, per layer and per model.

Methodology (the same for every backend):

* Threads: one count ``threads`` for everything: ``torch.set_num_threads(threads)`` and
  ``TVM_NUM_THREADS=threads`` (+ TVM's ``runtime.config_threadpool``), set before anything runs.
* Each measured callable is synchronous (CPU). After ``warmup`` calls, the number of calls per repeat
  (``number``) is calibrated so that one repeat takes at least ``min_repeat_ms``; a repeat's time is its
  wall time (``time.perf_counter``) divided by ``number``. We report the **median** over ``repeats``
  repeats and the inter-quartile range. All backends are timed from Python in the same way (PyTorch
  with ``torch.inference_mode``; TVM through ``relax.VirtualMachine`` with inputs already on the device,
  so there is no torch<->TVM conversion in the loop).
* ``shiftcomp`` is the shift build (tuned when a database for the target exists), ``tvm-float`` is the
  same network with float weights imported through ``torch.export`` without the lowering pass, built
  with the same pipeline and the same database folder (so tuned equally when both were tuned with
  :func:`shiftcomp.tune.tune`).
* ``deepshift-cpu*`` rows are **not run here**: they are the figures measured on this machine class for
  the original DeepShift CPU kernel (its C++ loop timed, 1 thread) and recorded in
  ``shared/DEEPSHIFT_NOTES.md``. We cannot ship that code; the numbers are a comparison constant.

Rows are plain dicts (see :data:`ROW_FIELDS`); :func:`write_outputs` writes CSV, markdown and a PNG.
"""

from __future__ import annotations

import copy
import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

# ------------------------------------------------------------------------------------------------
# constants
# ------------------------------------------------------------------------------------------------
BACKENDS: tuple[str, ...] = ("shiftcomp", "tvm-float", "torch", "torch.compile")

#: Original DeepShift CPU kernel (their C++ loop timed, 1 thread, medians, this machine class), with the
#: torch float32 time measured in the same session; milliseconds. Source: shared/DEEPSHIFT_NOTES.md.
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


# ------------------------------------------------------------------------------------------------
# threads / machine
# ------------------------------------------------------------------------------------------------
def set_threads(n: int) -> dict[str, Any]:
    """Use ``n`` threads in PyTorch and in the TVM runtime thread pool. Returns what was set."""
    os.environ["TVM_NUM_THREADS"] = str(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    info: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "TVM_NUM_THREADS": n}
    try:
        import tvm

        f = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
        if f is not None:
            f(1, n)          # (affinity mode kBig=1, nthreads)
        info["tvm_threads"] = int(tvm.runtime.num_threads())
    except Exception as e:  # pragma: no cover
        info["tvm_threads_error"] = repr(e)
    return info


def machine_info() -> dict[str, Any]:
    """CPU model, core count, load average and library versions (for the report)."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import tvm

        info["tvm"] = tvm.__version__
        info["llvm_cpu"] = str(tvm.get_global_func("target.llvm_get_system_cpu")())
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    return info


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Per-call latency statistics in milliseconds over ``repeats`` repeats of ``number`` calls."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    repeats: int
    number: int


def time_callable(fn: Callable[[], Any], warmup: int = 3, repeats: int = 15, min_repeat_ms: float = 20.0,
                  max_number: int = 10_000, max_total_s: float | None = 30.0) -> Timing:
    """Median latency of ``fn()`` (see the module docstring for the method). Times in milliseconds.

    ``max_total_s`` caps the time spent on one backend: slow callables (e.g. an untuned float build)
    get fewer warm-up calls and repeats (at least 3 repeats of one call each).
    """
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    if max_total_s is not None and one * (warmup + repeats) > max_total_s:
        warmup = 0
        repeats = max(3, min(repeats, int(max_total_s / one)))
    for _ in range(max(0, warmup - 1)):
        fn()
    if warmup > 0:
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-7)
    number = int(min(max_number, max(1, math.ceil(min_repeat_ms * 1e-3 / one))))
    samples: list[float] = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number * 1e3)
    samples.sort()
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4)
        q1, q3 = q[0], q[2]
    else:
        q1, q3 = samples[0], samples[-1]
    return Timing(statistics.median(samples), q1, q3, samples[0], len(samples), number)


# ------------------------------------------------------------------------------------------------
# cases
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerCase:
    """One layer shape. ``kind``: ``"conv"`` (incl. depthwise via ``groups``) or ``"linear"``.

    conv: input ``(batch, in_ch, hw, hw)``, ``kernel x kernel`` weights, ``stride``, ``padding`` (the default
    conv cases have no bias, as in the ResNets/MobileNetV2, so their kernels are the models' kernels).
    linear: input ``(batch, in_ch)`` -> ``(batch, out_ch)``.
    """

    name: str
    kind: str
    in_ch: int
    out_ch: int
    hw: int = 1
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    groups: int = 1
    batch: int = 1
    bias: bool = True
    deepshift_key: str | None = None

    def float_module(self) -> nn.Module:
        """A float32 ``nn.Sequential`` with the one layer (deterministic init, seed 0)."""
        g = torch.manual_seed(0)
        if self.kind == "conv":
            m: nn.Module = nn.Conv2d(self.in_ch, self.out_ch, self.kernel, self.stride, self.padding,
                                     groups=self.groups, bias=self.bias)
        else:
            m = nn.Linear(self.in_ch, self.out_ch, bias=self.bias)
        del g
        return nn.Sequential(m).eval()

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        shape = (self.batch, self.in_ch, self.hw, self.hw) if self.kind == "conv" else (self.batch, self.in_ch)
        return (torch.randn(*shape, generator=gen),)

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates (shift-adds for the shift layer) of one call."""
        if self.kind == "conv":
            return self.batch * self.out_ch * self.out_hw ** 2 * (self.in_ch // self.groups) * self.kernel ** 2
        return self.batch * self.in_ch * self.out_ch


def _conv(name: str, c: int, hw: int, o: int | None = None, groups: int = 1, stride: int = 1,
          key: str | None = None, batch: int = 1) -> LayerCase:
    return LayerCase(name, "conv", c, o or c, hw, 3, stride, 1, groups, batch, False, key)


#: Default per-layer cases (batch 1): ResNet-20 (CIFAR) and ResNet-18 convs, MobileNetV2 depthwise, linears.
DEFAULT_LAYER_CASES: tuple[LayerCase, ...] = (
    _conv("r20_conv16@32", 16, 32, key="conv16x16@32"),
    _conv("r20_conv32@16", 32, 16),
    _conv("r20_conv64@8", 64, 8),
    _conv("r18in_conv64@56", 64, 56, key="conv64x64@56"),
    _conv("r18_conv64@32", 64, 32),
    _conv("r18_conv128@16", 128, 16),
    _conv("r18_conv256@8", 256, 8),
    _conv("r18_conv512@4", 512, 4),
    _conv("mbv2_dw32@32", 32, 32, groups=32),
    _conv("mbv2_dw144@16", 144, 16, groups=144),
    _conv("mbv2_dw576@8", 576, 8, groups=576),
    LayerCase("linear1x4096x4096", "linear", 4096, 4096, batch=1, deepshift_key="linear1x4096x4096"),
    LayerCase("linear64x512x10", "linear", 512, 10, batch=64, deepshift_key="linear64x512x10"),
)

#: Default models of the end-to-end suite (names of ``shiftcomp.models.get_model``).
DEFAULT_MODELS: tuple[str, ...] = ("simple_conv", "resnet20", "resnet18", "mobilenetv2")


def find_cases(names: Iterable[str] | None, cases: Sequence[LayerCase] = DEFAULT_LAYER_CASES) -> list[LayerCase]:
    """Cases by name (all when ``names`` is falsy). Unknown names raise ``KeyError`` listing the known."""
    if not names:
        return list(cases)
    by = {c.name: c for c in cases}
    out = []
    for n in names:
        if n not in by:
            raise KeyError(f"unknown layer case {n!r}; known: {', '.join(by)}")
        out.append(by[n])
    return out


# ------------------------------------------------------------------------------------------------
# model conversion (helper-1's API) and builds
# ------------------------------------------------------------------------------------------------
def default_shift_config(weight_bits: int = 5, act_bits: tuple[int, int] | None = (3, 5), mode: str = "Q") -> Any:
    """The shift configuration the benchmarks use: DeepShift-Q, 5-bit weights, 8-bit activations Q(3,5)
    (DeepShift's ``-ab 3 5``; int32 accumulators on the zoo models). Documented in BENCHMARKS.md."""
    from shiftcomp.config import ShiftConfig

    return ShiftConfig(mode=mode, weight_bits=weight_bits, act_bits=act_bits)


def to_shift(model: nn.Module, config: Any) -> nn.Module:
    """A converted deep copy of ``model`` (``shiftcomp.convert``), in eval mode."""
    import shiftcomp

    conv = getattr(shiftcomp, "convert", None)
    if conv is None:
        from shiftcomp.convert import convert as conv  # type: ignore
    m = copy.deepcopy(model)
    out = conv(m, config)
    return (out if isinstance(out, nn.Module) else m).eval()


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
    import torch._dynamo

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


def _tvm_target(target: Any) -> Any:
    from shiftcomp.tune import resolve_target

    return resolve_target(target)


def _vm_runner(ex: Any, inputs: Sequence[torch.Tensor]) -> tuple[Callable[[], Any], Callable[[], torch.Tensor]]:
    import numpy as np
    import tvm
    from tvm import relax

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
                    db_dir: Any = None) -> Built:
    """The float network (shift layers as float32 conv/linear) through TVM, same pipeline as tuning.

    ``db_dir``: database (see :func:`shiftcomp.tune.apply_database`); ``False`` builds untuned.
    Untuned float PrimFuncs are TVM's legalized default loops (no schedule), i.e. a weak baseline: the
    fair comparison is with both sides tuned to the same budget.
    """
    import tvm
    from shiftcomp import tune as T

    tgt = _tvm_target(target)
    t0 = time.perf_counter()
    mod = T.import_float(model, inputs)
    mod = T.apply_database(mod, tgt, db_dir)
    tuned = bool(T.scheduled_names(mod))
    ex = tvm.compile(mod, target=tgt)
    bs = time.perf_counter() - t0
    run, out = _vm_runner(ex, inputs)
    return Built(run, bs, tuned, out)


def build_shiftcomp(model: nn.Module, inputs: Sequence[torch.Tensor], target: Any = "llvm",
                    db_dir: Any = None) -> Built:
    """The shift model through ``shiftcomp.compile`` (via :func:`shiftcomp.tune.compile_tuned`, which also
    serves shift kernels from the database when one resolves for the target).

    Timed through the compiled model's Relax VM on pre-converted inputs (``CompiledModel.vm_runner``).
    ``build_s`` is the whole compile time.
    """
    from shiftcomp import tune as T

    tgt = _tvm_target(target)
    t0 = time.perf_counter()
    compiled = T.compile_tuned(model, tuple(inputs), tgt, db_dir)
    bs = time.perf_counter() - t0
    tuned = bool(getattr(compiled, "tuned_kernels", []))
    out = lambda: compiled(*inputs).detach().float()  # noqa: E731
    vr = getattr(compiled, "vm_runner", None)
    if vr is not None:
        return Built(vr(*inputs), bs, tuned, out)
    return Built(lambda: compiled(*inputs), bs, tuned, out, "timed via compiled(*inputs)")


# ------------------------------------------------------------------------------------------------
# running suites
# ------------------------------------------------------------------------------------------------
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
               inputs: Sequence[torch.Tensor], backends: Sequence[str], target: Any, db_dir: Any,
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
                                             target, db_dir),
        "shiftcomp": lambda: build_shiftcomp(shift_model, inputs, target, db_dir),
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


def run_layer_bench(cases: Sequence[LayerCase] | Sequence[str] | None = None,
                    backends: Sequence[str] = BACKENDS, target: Any = "llvm", db_dir: Any = None,
                    threads: int | None = None, warmup: int = 3, repeats: int = 15,
                    min_repeat_ms: float = 20.0, config: Any = None,
                    log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Per-layer benchmark. Returns rows (dicts with :data:`ROW_FIELDS`), incl. ``deepshift-cpu*`` constants.

    Args:
        cases: :class:`LayerCase` objects or their names (default :data:`DEFAULT_LAYER_CASES`).
        backends: subset of :data:`BACKENDS`.
        target: compile target (``"llvm"`` = this CPU).
        db_dir: MetaSchedule database (``None``: ``schedules/<target_key>/`` if present; ``False``: untuned).
        threads: threads for every backend (default: physical cores).
        warmup, repeats, min_repeat_ms: see :func:`time_callable`.
        config: ``ShiftConfig`` for the shift layers (default :func:`default_shift_config`).
    """
    from shiftcomp.tune import physical_cores

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
        rows += _bench_one("layer", c.name, c.batch, fm, sm, c.example_inputs(), backends, target, db_dir,
                           threads, warmup, repeats, min_repeat_ms, c.macs, errors, log)
        if c.deepshift_key:
            d = DEEPSHIFT_CPU_MS[c.deepshift_key]
            r = _row("layer", c.name, c.batch, "deepshift-cpu*", 1,
                     Timing(d["deepshift_ms"], d["deepshift_ms"], d["deepshift_ms"], d["deepshift_ms"], 0, 0),
                     None, c.macs, note=f"measured constant (DEEPSHIFT_NOTES.md, 1 thread; torch then "
                                        f"{d['torch_ms']} ms), not run here")
            r["repeats"] = r["number"] = None
            rows.append(r)
    _add_ratios(rows)
    for e in errors:
        log("ERROR " + e)
    rows_errors[id(rows)] = errors
    return rows


def _safe_cfg(errors: list[str]) -> Any:
    try:
        return default_shift_config()
    except Exception as e:
        errors.append(f"ShiftConfig unavailable: {e}")
        return None


#: errors of the last runs, keyed by id(rows) (so callers can print them without changing the row schema)
rows_errors: dict[int, list[str]] = {}


def run_model_bench(models: Sequence[str] = DEFAULT_MODELS, batches: Sequence[int] = (1, 64),
                    backends: Sequence[str] = BACKENDS, target: Any = "llvm", db_dir: Any = None,
                    threads: int | None = None, warmup: int = 2, repeats: int = 10,
                    min_repeat_ms: float = 50.0, config: Any = None, num_classes: int = 10,
                    log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """End-to-end benchmark of zoo models (``shiftcomp.models.get_model``) at the given batch sizes.

    ``torch``/``torch.compile`` run the float model, ``tvm-float`` the float twin of the shift model
    (same weight values as float32), ``shiftcomp`` the shift model. ``build_s`` of ``shiftcomp`` is the
    full ``shiftcomp.compile`` time. Returns rows (:data:`ROW_FIELDS`).
    """
    from shiftcomp.models import INPUT_SHAPES, get_model
    from shiftcomp.tune import physical_cores

    from shiftcomp.energy import model_layer_ops

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
            rows += _bench_one("model", name, b, fm, sm, inputs, backends, target, db_dir, threads, warmup,
                               repeats, min_repeat_ms, macs, errors, log)
    _add_ratios(rows)
    for e in errors:
        log("ERROR " + e)
    rows_errors[id(rows)] = errors
    return rows


# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------
def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows to CSV with the :data:`ROW_FIELDS` columns (extra keys appended)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fields = list(ROW_FIELDS) + sorted({k for r in rows for k in r} - set(ROW_FIELDS))
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_csv(r.get(k)) for k in fields})
    return p


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read rows written by :func:`write_csv` (numbers parsed back)."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.append({k: _parse(v) for k, v in r.items()})
    return out


def _fmt_csv(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _parse(v: str) -> Any:
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def _ms(v: Any) -> str:
    if v is None:
        return "—"
    v = float(v)
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _x(v: Any) -> str:
    return "—" if v is None else f"{float(v):.2f}×"


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown tables: one per suite, a line per case+batch, median ms per backend and the ratios

    ``shift/torch`` (latency ratio, < 1 = shift faster), ``shift/tvm-float`` and
    ``deepshift/shift`` (speed-up over the original DeepShift CPU kernel, measured constant).
    """
    out = io.StringIO()
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    for s in suites:
        srows = [r for r in rows if r["suite"] == s]
        backends = [b for b in (*BACKENDS, "deepshift-cpu*") if any(r["backend"] == b for r in srows)]
        keys = list(dict.fromkeys((r["case"], r["batch"]) for r in srows))
        out.write(f"\n### {s} suite (median latency, ms)\n\n")
        hdr = ["case", "batch"] + backends + ["shift/torch", "shift/tvm-float", "shift/torch.compile",
                                              "deepshift/shift", "shift GOP/s", "tuned"]
        out.write("| " + " | ".join(hdr) + " |\n")
        out.write("|" + "---|" * len(hdr) + "\n")
        for case, batch in keys:
            by = {r["backend"]: r for r in srows if r["case"] == case and r["batch"] == batch}
            med = {b: (by[b]["median_ms"] if b in by else None) for b in backends}
            sh = med.get("shiftcomp")

            def ratio(other: str) -> str:
                o = med.get(other)
                return _x(sh / o) if sh and o else "—"

            ds = med.get("deepshift-cpu*")
            cells = [case, str(batch)] + [_ms(med[b]) for b in backends] + [
                ratio("torch"), ratio("tvm-float"), ratio("torch.compile"),
                (f"{ds / sh:.0f}×" if ds and sh else "—"),
                (f"{by['shiftcomp']['gops']:.1f}" if "shiftcomp" in by and by["shiftcomp"].get("gops") else "—"),
                ("/".join(f"{b}:{'y' if by[b].get('tuned') is True else 'n'}" for b in ("shiftcomp", "tvm-float")
                          if b in by)),
            ]
            out.write("| " + " | ".join(cells) + " |\n")
        threads = sorted({r["threads"] for r in srows if r["backend"] != "deepshift-cpu*" and r["threads"]})
        out.write(f"\nThreads: {threads}. `deepshift-cpu*` = measured constant from DEEPSHIFT_NOTES.md "
                  f"(original kernel, 1 thread), not re-run.\n")
    return out.getvalue()


def plot_rows(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path | None:
    """Grouped bar chart (log latency) per suite into one PNG. Returns None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    fig, axes = plt.subplots(len(suites), 1, figsize=(max(8, 0.9 * max(1, len(rows) // 3)), 4.5 * len(suites)),
                             squeeze=False)
    for ax, s in zip(axes[:, 0], suites):
        srows = [r for r in rows if r["suite"] == s and r["median_ms"]]
        keys = list(dict.fromkeys((r["case"], r["batch"]) for r in srows))
        backends = [b for b in (*BACKENDS, "deepshift-cpu*") if any(r["backend"] == b for r in srows)]
        width = 0.8 / max(1, len(backends))
        for i, b in enumerate(backends):
            vals = []
            for k in keys:
                v = [r["median_ms"] for r in srows if (r["case"], r["batch"]) == k and r["backend"] == b]
                vals.append(float(v[0]) if v else float("nan"))
            ax.bar([j + i * width for j in range(len(keys))], vals, width, label=b)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        ax.set_xticklabels([f"{c}\nb{bt}" for c, bt in keys], rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("median latency (ms, log)")
        ax.set_title(f"{s} suite")
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def write_outputs(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, stem: str = "bench",
                  meta: Mapping[str, Any] | None = None, plot: bool = True) -> dict[str, Path]:
    """Write ``<stem>.csv``, ``<stem>.md`` (tables + machine/meta header), ``<stem>.png``, ``<stem>.json``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"csv": write_csv(rows, d / f"{stem}.csv")}
    meta = dict(meta or {})
    meta.setdefault("date", _dt.datetime.now().isoformat(timespec="seconds"))
    meta.setdefault("machine", machine_info())
    md = [f"# {stem}\n", "```", json.dumps(meta, indent=1, default=str), "```", to_markdown(rows)]
    (d / f"{stem}.md").write_text("\n".join(md))
    paths["md"] = d / f"{stem}.md"
    (d / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=1, default=str))
    paths["json"] = d / f"{stem}.json"
    if plot:
        p = plot_rows(rows, d / f"{stem}.png")
        if p is not None:
            paths["png"] = p
    return paths


# ------------------------------------------------------------------------------------------------
# weight bytes
# ------------------------------------------------------------------------------------------------
def weight_bytes(model: nn.Module, bits: int) -> dict[str, int]:
    """Weight storage of a shift model: ``packed`` (conv/linear weights at ``bits`` bits each, per-layer
    byte-rounded, + float32 biases and other float params such as BatchNorm) vs ``float32`` (all params
    at 4 bytes). Bytes."""
    packed = f32 = 0
    seen: set[int] = set()
    for m in model.modules():
        if hasattr(m, "integer_weights"):
            shift, _ = m.integer_weights()
            n = int(shift.numel())
            packed += (n * bits + 7) // 8
            f32 += 4 * n
            b = getattr(m, "bias", None)
            if b is not None:
                packed += 4 * b.numel()
                f32 += 4 * b.numel()
            for p in m.parameters(recurse=False):
                seen.add(id(p))
    for p in model.parameters():
        if id(p) not in seen:
            packed += 4 * p.numel()
            f32 += 4 * p.numel()
    for name, buf in model.named_buffers():
        if "running" in name:
            packed += 4 * buf.numel()
            f32 += 4 * buf.numel()
    return {"packed": packed, "float32": f32}


# ------------------------------------------------------------------------------------------------
# per-kernel profile (where the time goes)
# ------------------------------------------------------------------------------------------------
#: AVX-512 variable shift peak used for "fraction of peak": VPSLLVD zmm issues on port 0 only, one per
#: cycle (uops.info / Agner Fog instruction tables, Ice Lake-SP .. Sapphire/Emerald Rapids), 16 int32 lanes;
#: every term also needs a vector add on p0/p5, so 16 terms/cycle/core is the shift-add ceiling.
VPSLLVD_PER_CYCLE: float = 1.0
INT32_LANES_ZMM: int = 16


def shift_peak_terms_per_s(cores: int, ghz: float) -> float:
    """Shift-add ceiling in terms per second: cores x 1 VPSLLVD/cycle x 16 lanes x clock (GHz)."""
    return cores * VPSLLVD_PER_CYCLE * INT32_LANES_ZMM * ghz * 1e9


def cpu_ghz() -> float:
    """Nominal clock from /proc/cpuinfo (``cpu MHz``; under KVM the TSC rate), in GHz."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1e3
    except OSError:
        pass
    return float("nan")


def _random_args(prim: Any, dev: Any, seed: int = 0) -> list[Any]:
    import numpy as np
    import tvm

    rng = np.random.default_rng(seed)
    args = []
    for p in prim.params:
        ty = p.ty
        shape = tuple(int(d) for d in ty.shape)
        dt = str(ty.dtype)
        if dt == "int8":
            a = rng.integers(-4, 5, shape).astype(dt)           # valid weight codes (small shifts)
        elif dt.startswith("int"):
            a = rng.integers(-64, 64, shape).astype(dt)
        else:
            a = rng.standard_normal(shape).astype(dt)
        args.append(tvm.runtime.tensor(a, dev))
    return args


def _call_counts(mod: Any) -> dict[str, int]:
    """How often ``main`` calls each PrimFunc (``call_tir``), by GlobalVar name."""
    from tvm import relax

    counts: dict[str, int] = {}

    def visit(e: Any) -> None:
        if isinstance(e, relax.Call) and e.op == tvm_op("relax.call_tir"):
            gv = e.args[0]
            counts[gv.name_hint] = counts.get(gv.name_hint, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


def tvm_op(name: str) -> Any:
    import tvm

    return tvm.ir.Op.get(name)


def profile_module(mod: Any, target: Any = "llvm", repeat: int = 5, min_repeat_ms: float = 20.0,
                   macs: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Time every PrimFunc called by ``main`` standalone (random inputs, ``time_evaluator`` median).

    Returns rows ``{kernel, calls, ms_each, ms_total, share, scheduled, role}`` sorted by total time;
    ``share`` is of the sum over kernels (VM overhead excluded). ``macs``: optional per-kernel terms for
    a ``gops`` column.
    """
    import tvm
    from tvm import tirx

    tgt = _tvm_target(target)
    dev = tvm.cpu()
    counts = _call_counts(mod)
    rows = []
    for gv, f in mod.functions_items():
        if not isinstance(f, tirx.PrimFunc) or gv.name_hint not in counts:
            continue
        prim = f.with_attr("global_symbol", "main")
        try:
            ex = tvm.compile(tvm.IRModule({"main": prim}), target=tgt)
            args = _random_args(prim, dev)
            res = ex.mod.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=int(min_repeat_ms))(*args)
            ms = float(res.median) * 1e3
        except Exception as e:  # pragma: no cover - reported, not fatal
            rows.append({"kernel": gv.name_hint, "calls": counts[gv.name_hint], "error": str(e)[:200]})
            continue
        attrs = f.attrs if f.attrs is not None else {}
        r = {"kernel": gv.name_hint, "calls": counts[gv.name_hint], "ms_each": ms,
             "ms_total": ms * counts[gv.name_hint], "scheduled": bool(attrs.get("tirx.is_scheduled", False)),
             "role": str(attrs.get("shiftcomp.role", "other"))}
        if macs and gv.name_hint in macs:
            r["gops"] = macs[gv.name_hint] / (ms * 1e-3) / 1e9
        rows.append(r)
    tot = sum(r.get("ms_total", 0.0) for r in rows) or 1.0
    for r in rows:
        if "ms_total" in r:
            r["share"] = r["ms_total"] / tot
    rows.sort(key=lambda r: -r.get("ms_total", 0.0))
    return rows


def profile_model(model: nn.Module, inputs: Sequence[torch.Tensor], target: Any = "llvm", db_dir: Any = None,
                  side: str = "shift") -> list[dict[str, Any]]:
    """Per-kernel profile of a shift model as shiftcomp builds it (``side="shift"``, with the database's
    shift kernels and glue when ``db_dir`` resolves) or of its float twin (``side="float"``)."""
    from shiftcomp import tune as T

    tgt = _tvm_target(target)
    if side == "float":
        mod = T.apply_database(T.import_float(model, inputs), tgt, db_dir)
        return profile_module(mod, tgt)
    path = T.resolve_db_dir(tgt, db_dir)
    with T.shift_kernel_database(path, tgt):
        fused, report = T.staged_module(model, inputs, tgt, lower=True)
    if path is not None:
        fused = _apply_fused(fused, tgt, path)
    macs = {}
    for low in report.layers.values():
        sp = low.spec
        if hasattr(sp, "kernel_h"):
            oh, ow = sp.out_shape[2], sp.out_shape[3]
            m = sp.batch * sp.out_channels * oh * ow * (sp.in_channels // sp.groups) * sp.kernel_h * sp.kernel_w
        else:
            m = sp.batch * sp.in_features * sp.out_features
        macs[low.kernel] = int(m)
    return profile_module(fused, tgt, macs=macs)


def _apply_fused(fused: Any, tgt: Any, path: Any) -> Any:
    """MetaScheduleApplyDatabase on an already fused module (as ``shiftcomp.compile`` does)."""
    import tvm
    from tvm import relax
    from shiftcomp import tune as T

    db = T.open_database(path)
    with tgt, db, tvm.transform.PassContext(opt_level=3):
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
