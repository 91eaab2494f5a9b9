"""The TVM thread pool gets one thread per physical core (TVM alone would halve the count on x86)."""
from __future__ import annotations

import os
import subprocess
import sys

from shiftcomp.threads import ensure_tvm_threads, physical_cores


def test_physical_cores_is_within_the_cpus_of_this_process() -> None:
    n = physical_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_the_users_setting_wins(monkeypatch) -> None:
    monkeypatch.setenv("TVM_NUM_THREADS", "7")
    assert ensure_tvm_threads() is None and os.environ["TVM_NUM_THREADS"] == "7"
    monkeypatch.delenv("TVM_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ensure_tvm_threads() is None and "TVM_NUM_THREADS" not in os.environ
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert ensure_tvm_threads() == str(physical_cores()) == os.environ["TVM_NUM_THREADS"]


def test_a_fresh_process_runs_compiled_models_on_every_core() -> None:
    code = ("import torch, tvm, shiftcomp as sc\n"
            "from shiftcomp.threads import physical_cores\n"
            "m = sc.convert(torch.nn.Sequential(torch.nn.Linear(8, 4)), sc.ShiftConfig(act_bits=(3, 5)))\n"
            "x = torch.randn(2, 8)\n"
            "sc.compile(m, x, tuned=None)(x)\n"
            "print(tvm.runtime.num_threads(), physical_cores())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr[-2000:]
    got, cores = out.stdout.split()[-2:]
    assert got == cores
