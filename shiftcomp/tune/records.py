"""Writing and reading tuning records outside a search: manual schedules as records, applying a database
to the float baseline or to PrimFuncs, and a database's counts."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.builder import BuilderInput
from tvm.s_tir.meta_schedule.runner import RunnerInput
from tvm.target import Target

from schedules import canonical_spec, x86
from schedules.database import RECORD_FILE, WORKLOAD_FILE, normalize, resolve_database
from shiftcomp.baseline import prepare_module

from .measure import make_builder, make_runner
from .tasks import Task

__all__ = ["record_schedule", "record_manual_schedules", "apply_database", "scheduled_names", "database_summary"]

log = logging.getLogger("shiftcomp.tune")

_MANUAL = {"dense": x86.dense_schedule, "conv2d": x86.conv2d_schedule}


def record_schedule(db_dir: str | os.PathLike, prim: tvm.tirx.PrimFunc, sch: Any, target: Target,
                    run_secs: Sequence[float] = (1e-3,)) -> None:
    """Store a hand-made ``tvm.s_tir.Schedule`` of ``prim`` as a tuning record (no measurement)."""
    Path(db_dir).mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    wl = db.commit_workload(normalize(prim))
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, [float(s) for s in run_secs], target,
                                                     ArgInfo.from_prim_func(prim)))


def record_manual_schedules(tasks: Sequence[Task], target: Target, work_dir: str | os.PathLike,
                            number: int = 3, repeat: int = 3) -> dict[str, float]:
    """Measure the manual x86 schedules of shift-kernel tasks (``task.kernel`` set) and store them as
    records, so the database's best record is never slower than the manual schedule.
    Returns ``{task name: manual ms}``; CPU targets only."""
    if target.kind.name != "llvm":
        return {}
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    builder, runner = make_builder(), make_runner(None, number=number, repeat=repeat)
    out: dict[str, float] = {}
    for task in tasks:
        if task.kernel is None:
            continue
        kind, spec = task.kernel
        schedule = _MANUAL.get(kind.replace("_float", ""))
        if schedule is None:
            continue
        sch = schedule(normalize(task.prim)["main"], canonical_spec(spec), target)
        (b,) = builder.build([BuilderInput(sch.mod, target)])
        if b.error_msg:
            log.warning("manual schedule of %s does not build: %s", task.name, b.error_msg[:300])
            continue
        (fut,) = runner.run([RunnerInput(b.artifact_path, "cpu", ArgInfo.from_prim_func(task.prim))])
        r = fut.result()
        if r.error_msg:
            log.warning("manual schedule of %s does not run: %s", task.name, r.error_msg[:300])
            continue
        secs = [float(v) for v in r.run_secs]
        wl = db.commit_workload(normalize(task.prim))
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, secs, target, ArgInfo.from_prim_func(task.prim)))
        out[task.name] = 1e3 * sum(secs) / len(secs)
    return out


def apply_database(mod: tvm.IRModule | tvm.tirx.PrimFunc, target: Target, tuned: Any = "auto") -> tvm.IRModule:
    """A Relax module prepared (:func:`shiftcomp.baseline.prepare_module`) with every PrimFunc that has a
    record scheduled from the database (``tuned`` as in ``shiftcomp.compile``), or PrimFuncs scheduled
    under their own names. For the float baseline; a shift model goes through ``shiftcomp.compile``."""
    if isinstance(mod, tvm.tirx.PrimFunc):
        mod = tvm.IRModule({"main": mod})
    db, _ = resolve_database(tuned, target)
    if any(isinstance(f, relax.Function) for _, f in mod.functions_items()):
        mod = prepare_module(mod, target)
        if db is None:
            return mod
        with target, db, tvm.transform.PassContext(opt_level=3):
            return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    if db is None:
        return mod
    out = {}
    for gv, f in mod.functions_items():
        if isinstance(f, tvm.tirx.PrimFunc) and not (f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)):
            sch = db.query_schedule(normalize(f), target=target, workload_name="main")
            if sch is not None:
                f = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                if gv.name_hint != "main":
                    f = f.with_attr("global_symbol", gv.name_hint)
        out[gv.name_hint] = f
    return tvm.IRModule(out)


def scheduled_names(mod: tvm.IRModule) -> list[str]:
    """Names of PrimFuncs marked ``tirx.is_scheduled``."""
    return sorted(gv.name_hint for gv, f in mod.functions_items()
                  if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and f.attrs.get("tirx.is_scheduled", False))


def database_summary(db_dir: str | os.PathLike) -> dict[str, int]:
    """Counts of a stored database: workloads, records, measured records (``run_secs < 1e9``)."""
    p = Path(db_dir)
    n_wl = sum(1 for _ in open(p / WORKLOAD_FILE)) if (p / WORKLOAD_FILE).exists() else 0
    n_rec = ok = 0
    if (p / RECORD_FILE).exists():
        for line in open(p / RECORD_FILE):
            n_rec += 1
            secs = json.loads(line)[1][1]
            ok += int(bool(secs) and all(float(v) < 1e9 for v in secs))
    return {"workloads": n_wl, "records": n_rec, "measured": ok}
