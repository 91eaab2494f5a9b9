"""Autotuning: MetaSchedule records for the kernels ``shiftcomp.compile`` builds, per target.

    summary = shiftcomp.tune.tune(model, (x,), "llvm", trials=64)     # -> schedules/<target_key>/
    compiled = shiftcomp.compile(model, (x,), "llvm")                   # tuned="auto" finds it
    compiled.tuned_kernels                                              # what the database served

The tasks come from the compile pipeline itself (``shiftcomp.tune.tasks``): the shift kernels' tuning
keys (what ``passes.kernels.DatabaseKernels`` looks up) and the fused glue after the ``fuse`` stage (what
the ``apply_database`` stage looks up), so what is tuned is what compile finds. Modules:
:mod:`~shiftcomp.tune.tasks`, :mod:`~shiftcomp.tune.search` (budgeted search), :mod:`~shiftcomp.tune.measure`
(builders and runners, RPC), :mod:`~shiftcomp.tune.records` (manual schedules as records, the float
baseline), :mod:`~shiftcomp.tune.shapes` (the sum-then-shift kernels' shapes, measured per layer shape),
``python -m shiftcomp.tune`` (zoo models and benchmark layers). Needs the ``tune`` extra
(``pip install shiftcomp[tune]``: xgboost, cloudpickle, tornado).
"""
from schedules.database import (RECORD_FILE, SCHEDULES_DIR, WORKLOAD_FILE, default_db_dir, has_database,
                                open_database, resolve_database)
from schedules.target import resolve_target, target_key

from .api import tune, tune_module
from .measure import RPCSpec, make_builder, make_runner, physical_cores
from .records import apply_database, database_summary, record_manual_schedules, record_schedule, scheduled_names
from .search import TuneSummary, tune_tasks
from .shapes import ShapeResult, tune_shapes
from .tasks import SIDES, Task, extract_tasks, model_tasks

__all__ = ["tune", "tune_module", "tune_tasks", "TuneSummary", "tune_shapes", "ShapeResult", "Task", "SIDES",
           "extract_tasks", "model_tasks",
           "RPCSpec", "make_builder", "make_runner", "physical_cores", "apply_database", "database_summary",
           "record_manual_schedules", "record_schedule", "scheduled_names", "resolve_target", "target_key",
           "default_db_dir", "has_database", "open_database", "resolve_database", "SCHEDULES_DIR", "RECORD_FILE",
           "WORKLOAD_FILE"]
