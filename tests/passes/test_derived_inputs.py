"""Derivation lookup by the module an artifact recorded, including artifacts written before the sum-then-shift
and table GEMV derivations moved to numpy-only modules."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from passes import sum_then_shift_family, sum_then_shift_plan, table_gemv_family, table_gemv_inputs
from passes.derived_inputs import MOVED_MODULES, derivation

REPO = Path(__file__).resolve().parents[2]


def test_old_modules_reexport_the_registered_functions() -> None:
    assert sum_then_shift_family.plan_input is sum_then_shift_plan.plan_input
    assert table_gemv_family.table_input is table_gemv_inputs.table_input
    assert derivation(sum_then_shift_plan.PLAN_INPUT).derivation_module == "passes.sum_then_shift_plan"
    assert derivation(table_gemv_inputs.TABLE_INPUT).derivation_module == "passes.table_gemv_inputs"


def test_module_outside_the_allowed_packages_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        derivation("no.such.derivation", "os")


def test_recorded_old_module_resolves_with_runtime_only_tvm() -> None:
    """An artifact that names the kernel-building module (which imports the TVM compiler) still finds its
    derivation with only libtvm_runtime: the moved name resolves to the numpy-only module."""
    calls = [(sum_then_shift_plan.PLAN_INPUT, "passes.sum_then_shift_family"),
             (table_gemv_inputs.TABLE_INPUT, "passes.table_gemv_family")]
    assert all(MOVED_MODULES[old] for _, old in calls)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        import tvm.base
        from passes.derived_inputs import derivation
        print([derivation(n, m).__module__ for n, m in {calls!r}], tvm.base._RUNTIME_ONLY,
              sorted(m for m in sys.modules if m.startswith("passes.") and m.endswith("_family")))
    """)], capture_output=True, text=True, cwd=str(REPO), env={**os.environ, "TVM_USE_RUNTIME_LIB": "1"},
        timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["['passes.sum_then_shift_plan',", "'passes.table_gemv_inputs']", "True", "[]"]
