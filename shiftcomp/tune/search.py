"""MetaSchedule search over a task list, within a total budget of measured candidates."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderInput
from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
from tvm.s_tir.meta_schedule.utils import fork_seed
from tvm.target import Target

from schedules.database import normalize
from schedules.target import target_key

from .measure import RPCSpec, cuda_available, make_builder, make_runner, physical_cores
from .tasks import Task

__all__ = ["TuneSummary", "tune_tasks"]

log = logging.getLogger("shiftcomp.tune")


@dataclass
class TuneSummary:
    """What a tuning run did. Times in seconds.

    Attributes:
        work_dir: the database folder.
        target_key: the target's key (``schedules/<target_key>/``).
        tasks: task names.
        trials: the total budget of measured candidates.
        measured: records written (at most ``trials``).
        seconds: wall time.
        measured_on: ``"local"``, ``"rpc://host:port/key"`` or ``"not measured (no GPU)"``.
        best_ms: best measured time per task.
        shapes: the sum-then-shift layer shapes measured (``shiftcomp.tune.shapes.ShapeResult.to_dict``).
    """

    work_dir: str
    target_key: str
    tasks: list[str]
    trials: int
    measured: int
    seconds: float
    measured_on: str
    best_ms: dict[str, float]
    shapes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dict(self.__dict__)


def _best_ms(db: Any, tasks: Sequence[Task]) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in tasks:
        top = db.get_top_k(db.commit_workload(normalize(t.prim)), 1)
        if top and top[0].run_secs and all(float(v) < 1e9 for v in top[0].run_secs):
            out[t.name] = 1e3 * sum(float(v) for v in top[0].run_secs) / len(top[0].run_secs)
    return out


def _cuda_dry_run(tasks: Sequence[Task], target: Target, n_build: int = 2) -> int:
    """No GPU: generate each task's design space and build ``n_build`` candidates (nothing measured), so a
    broken CUDA path shows up on a machine without a GPU. Returns the candidates built."""
    built = 0
    builder = make_builder()
    for t in tasks:
        ctx = ms.TuneContext(mod=normalize(t.prim), target=target, space_generator="post-order-apply",
                             search_strategy="evolutionary", task_name=t.name)
        spaces = ctx.generate_design_space()
        if not spaces:
            raise RuntimeError(f"no design space for CUDA task {t.name}")
        for r in builder.build([BuilderInput(s.mod, target) for s in spaces[:n_build]]):
            if r.error_msg:
                raise RuntimeError(f"CUDA candidate build failed for {t.name}: {r.error_msg[:500]}")
            built += 1
    return built


def tune_tasks(tasks: Sequence[Task], target: Target, trials: int, work_dir: str | Path,
               rpc: RPCSpec | Any | None = None, *, num_trials_per_iter: int = 16, seed: int | None = 0,
               cost_model: str = "xgb", runner_number: int = 3, max_seconds: float | None = None,
               chunk_size: int = 8, population_size: int = 128, genetic_num_iters: int = 2) -> TuneSummary:
    """Tune ``tasks`` with at most ``trials`` measured candidates in total, spread evenly over the tasks.

    Args:
        tasks: the tasks (:mod:`shiftcomp.tune.tasks`).
        target: the resolved target.
        trials: total budget of measured candidates (each task gets ``ceil(trials / len(tasks))`` at most).
        work_dir: JSONDatabase folder; records are appended.
        rpc: measure through a TVM RPC tracker instead of in process.
        num_trials_per_iter: candidates per search iteration.
        max_seconds: soft wall-clock budget, checked between chunks of ``chunk_size`` tasks.
        population_size, genetic_num_iters: evolutionary-search size (smaller than TVM's defaults: on a
            small machine the default search costs more than measuring).

    For CUDA without a GPU nothing is measured (see :func:`_cuda_dry_run`).
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    key = target_key(target)
    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    names = [t.name for t in tasks]
    if target.kind.name == "cuda" and rpc is None and not cuda_available():
        built = _cuda_dry_run(tasks, target)
        log.warning("CUDA target %s: no GPU here; %d tasks generated, %d candidates built, nothing measured",
                    key, len(tasks), built)
        return TuneSummary(str(wd), key, names, trials, 0, time.time() - t0, "not measured (no GPU)", {})
    if not tasks:
        return TuneSummary(str(wd), key, [], trials, 0, 0.0, "local", {})
    db = ms.database.JSONDatabase(work_dir=str(wd))
    n_before = len(db)
    builder = make_builder()
    runner = make_runner(rpc, number=runner_number)
    per_task = max(1, math.ceil(trials / len(tasks)))
    remaining = trials
    chunk = max(1, int(chunk_size))
    with tqdm(total=len(tasks), desc=f"tuning {key}", unit="task", leave=False) as bar:
        for i in range(0, len(tasks), chunk):
            if remaining <= 0:
                log.info("budget of %d trials spent; %d task(s) not tuned", trials, len(tasks) - i)
                break
            if max_seconds is not None and time.time() - t0 > max_seconds:
                log.warning("tuning budget of %.0f s exhausted; skipped %d task(s)", max_seconds, len(tasks) - i)
                break
            part = tasks[i:i + chunk]
            ctxs = []
            for t, logger, rs in zip(part, get_loggers_from_work_dir(str(wd), [t.name for t in part]),
                                     fork_seed(seed, n=len(part))):
                strategy = ms.search_strategy.EvolutionarySearch(
                    population_size=population_size, init_measured_ratio=0.2, init_min_unmeasured=16,
                    genetic_num_iters=genetic_num_iters)
                ctxs.append(ms.TuneContext(mod=normalize(t.prim), target=target, space_generator="post-order-apply",
                                           search_strategy=strategy, task_name=t.name, logger=logger,
                                           rand_state=rs, num_threads=physical_cores()).clone())
            budget = min(remaining, per_task * len(part))
            before = len(db)
            ms.tune_tasks(tasks=ctxs, task_weights=[t.weight for t in part], work_dir=str(wd),
                          max_trials_global=budget, max_trials_per_task=per_task,
                          num_trials_per_iter=max(1, min(num_trials_per_iter, per_task)), builder=builder,
                          runner=runner, database=db, cost_model=cost_model, task_scheduler="round-robin")
            remaining -= len(db) - before
            bar.update(len(part))
    where = "local" if rpc is None else (
        f"rpc://{rpc.tracker_host}:{rpc.tracker_port}/{rpc.key}" if isinstance(rpc, RPCSpec) else "rpc")
    return TuneSummary(str(wd), key, names, trials, len(db) - n_before, time.time() - t0, where, _best_ms(db, tasks))
