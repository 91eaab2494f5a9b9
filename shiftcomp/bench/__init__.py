"""Benchmarks: shiftcomp vs TVM float vs PyTorch eager vs torch.compile, per layer and per model.

    rows = shiftcomp.benchmark(model, (x,), baselines=["torch", "tvm-float"])   # one model, one run

Method (the same for every backend, :mod:`~shiftcomp.bench.timing`): one thread count for everything
(``torch.set_num_threads`` and TVM's pool); after warm-up, the calls per repeat are calibrated so a repeat
lasts ``min_repeat_ms``; we report the median over repeats and the inter-quartile range, timed from Python
(TVM through its VM on inputs already on the device). ``shiftcomp`` is the shift build (``tuned="auto"``),
``tvm-float`` the same network with float32 weights through TVM (:mod:`shiftcomp.baseline`), tuned from
the same database. ``deepshift-cpu*`` rows are constants measured for the original DeepShift CPU kernel
(BENCHMARKS.md), not run here.

Modules: :mod:`~shiftcomp.bench.cases` (layer cases, shift config), :mod:`~shiftcomp.bench.backends`,
:mod:`~shiftcomp.bench.suites` (rows), :mod:`~shiftcomp.bench.report` (CSV, markdown, PNG),
:mod:`~shiftcomp.bench.profile` (per-kernel profiles, weight sizes), :mod:`~shiftcomp.bench.api`.
"""
from .api import BASELINES, benchmark
from .backends import BACKENDS, Built, build_shiftcomp, build_torch, build_torch_compile, build_tvm_float
from .cases import DEFAULT_LAYER_CASES, DEFAULT_MODELS, LayerCase, default_shift_config, find_cases, to_shift
from .profile import cpu_ghz, profile_model, profile_module, shift_peak_terms_per_s, weight_bytes
from .report import plot_rows, read_csv, to_markdown, write_csv, write_outputs
from .suites import DEEPSHIFT_CPU_MS, ROW_FIELDS, Rows, bench_model, run_layer_bench, run_model_bench
from .timing import Timing, machine_info, set_threads, time_callable

__all__ = ["benchmark", "BASELINES", "BACKENDS", "Built", "build_shiftcomp", "build_torch", "build_torch_compile",
           "build_tvm_float", "DEFAULT_LAYER_CASES", "DEFAULT_MODELS", "LayerCase", "default_shift_config",
           "find_cases", "to_shift", "cpu_ghz", "profile_model", "profile_module", "shift_peak_terms_per_s",
           "weight_bytes", "plot_rows", "read_csv", "to_markdown", "write_csv", "write_outputs", "DEEPSHIFT_CPU_MS",
           "ROW_FIELDS", "Rows", "bench_model", "run_layer_bench", "run_model_bench", "Timing", "machine_info",
           "set_threads", "time_callable"]
