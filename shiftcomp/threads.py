"""The TVM runtime's thread pool size: one thread per physical core available to this process.

TVM sizes its pool, when it first starts it, from ``TVM_NUM_THREADS`` (else ``OMP_NUM_THREADS``), else from
the hardware concurrency halved on x86, on the assumption that every core runs two hyperthreads. On a
machine without SMT -- e.g. a VM whose 2 vCPUs are 2 cores -- that is half the cores: a compiled model ran
on one of two cores, and ``runtime.config_threadpool`` cannot raise the pool past that size.
:func:`ensure_tvm_threads` sets ``TVM_NUM_THREADS`` from the real topology unless the user set either
variable; ``import shiftcomp`` calls it, before anything can start the pool.
"""
from __future__ import annotations

import os

__all__ = ["physical_cores", "ensure_tvm_threads"]


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (SMT siblings counted once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:          # no sysfs topology: count the CPU as a core
            cores.add(str(cpu))
    return max(1, len(cores))


def ensure_tvm_threads() -> str | None:
    """Set ``TVM_NUM_THREADS`` to :func:`physical_cores` unless ``TVM_NUM_THREADS`` or ``OMP_NUM_THREADS`` is
    set; returns the value set, else None."""
    if "TVM_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return None
    os.environ["TVM_NUM_THREADS"] = str(physical_cores())
    return os.environ["TVM_NUM_THREADS"]
