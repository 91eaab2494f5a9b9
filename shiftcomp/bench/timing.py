"""Timing method shared by every backend, and the machine facts a benchmark reports."""
from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import tvm

__all__ = ["set_threads", "machine_info", "Timing", "time_callable"]


def set_threads(n: int) -> dict[str, Any]:
    """Use ``n`` threads in PyTorch and in the TVM runtime thread pool. Returns what was set.

    TVM's pool is sized once, when it starts, from ``TVM_NUM_THREADS``; ``runtime.config_threadpool``
    then picks ``n`` up to that size. So the variable is only ever raised here (``import shiftcomp`` sets it
    to the physical cores): setting it to ``n`` would pin a first ``set_threads(1)`` for the whole process.
    """
    if int(os.environ.get("TVM_NUM_THREADS", "0") or 0) < n:
        os.environ["TVM_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    info: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "TVM_NUM_THREADS": n}
    try:

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
