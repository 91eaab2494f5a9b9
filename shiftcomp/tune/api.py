"""``shiftcomp.tune``: tune a model's kernels into the database that ``shiftcomp.compile`` reads."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tvm

from schedules.database import default_db_dir
from schedules.target import resolve_target

from .measure import RPCSpec
from .records import record_manual_schedules
from .search import TuneSummary, tune_tasks
from .shapes import tune_shapes
from .tasks import SIDES, extract_tasks, model_tasks

__all__ = ["tune", "tune_module"]

log = logging.getLogger("shiftcomp.tune")


def tune(model: Any, example_inputs: Sequence[Any], target: Any = "llvm", trials: int = 64,
         work_dir: str | os.PathLike | None = None, *, sides: Sequence[str] = SIDES, rpc: RPCSpec | Any | None = None,
         max_seconds: float | None = None, seed: int | None = 0, record_manual: bool = True,
         kernels: Any = None, shapes: bool = True) -> TuneSummary:
    """Tune a shift model for ``target``; ``shiftcomp.compile(model, inputs, target, tuned=work_dir)`` (or
    ``tuned="auto"`` with the default folder) then uses the records.

    Args:
        model: a torch model with shift layers.
        example_inputs: its inputs (the shapes ``compile`` will see; records are per shape).
        target: ``"llvm"`` (this CPU), ``"cuda"``, a dict or a Target.
        trials: total budget of measured candidates over all tasks (spread evenly).
        work_dir: the database folder; default ``schedules/<target_key>/`` (what ``tuned="auto"`` reads).
        sides: task groups (``shiftcomp.tune.tasks.SIDES``): the shift kernels, their fused glue, and the
            float baseline (tuned with the same per-task budget, for fair benchmarks).
        rpc: measure through a TVM RPC tracker (:class:`RPCSpec`).
        max_seconds: soft wall-clock budget.
        record_manual: first store the manual x86 schedules of the shift kernels as measured records, so
            tuning never makes a kernel slower than its manual schedule.
        kernels: the kernel provider ``compile`` will be given (default: the manual schedules).
        shapes: first measure the shapes of the sum-then-shift kernels (:mod:`shiftcomp.tune.shapes`: lanes,
            block vectors, input-channel tiles, conv layout per layer shape; LLVM targets, default kernels only) into
            ``work_dir/sum_then_shift.json``.
    """
    tgt = resolve_target(target)
    wd = Path(work_dir) if work_dir is not None else default_db_dir(tgt)
    t0 = time.monotonic()
    shape_results = []
    if shapes and kernels is None and tgt.kind.name == "llvm":
        shape_results = tune_shapes(model, tuple(example_inputs), tgt, wd, max_seconds=max_seconds,
                                    seed=0 if seed is None else int(seed))
        if max_seconds is not None:
            max_seconds = max(1.0, max_seconds - (time.monotonic() - t0))
    groups = model_tasks(model, tuple(example_inputs), tgt, sides, kernels)
    tasks = [t for side in sides for t in groups[side]]
    if record_manual and "shift_kernels" in groups:
        manual = record_manual_schedules(groups["shift_kernels"], tgt, wd)
        log.info("manual schedules measured (ms): %s", manual)
    log.info("tuning %d task(s) with %d trials in total", len(tasks), trials)
    summary = tune_tasks(tasks, tgt, trials, wd, rpc, max_seconds=max_seconds, seed=seed)
    summary.shapes = [r.to_dict() for r in shape_results]
    summary.seconds = time.monotonic() - t0
    return summary


def tune_module(mod: tvm.IRModule | tvm.tirx.PrimFunc, target: Any, trials: int, work_dir: str | os.PathLike,
                rpc: RPCSpec | Any | None = None, *, name_filter: Sequence[str] | None = None,
                **search: Any) -> TuneSummary:
    """Tune the PrimFuncs of a Relax module (prepared as TVM's default pipeline does) or PrimFunc(s) with
    ``trials`` measured candidates in total; ``search``: options of :func:`shiftcomp.tune.search.tune_tasks`."""
    tgt = resolve_target(target)
    return tune_tasks(extract_tasks(mod, tgt, name_filter), tgt, trials, work_dir, rpc, **search)
