"""Tuning databases: where they live, how ``compile(tuned=...)`` finds one, and the one normal form of a
PrimFunc that both recording (``shiftcomp.tune``) and lookup (``passes.kernels.DatabaseKernels``, the
pipeline's ``apply_database`` stage) use.

Layout (TVM's ``JSONDatabase``)::

    schedules/<target_key>/database_workload.json        # one line per distinct PrimFunc (structural hash)
    schedules/<target_key>/database_tuning_record.json   # one line per measured schedule trace
    schedules/<target_key>/TUNING.md                      # how it was produced

``target_key`` (:func:`schedules.target.target_key`) names the hardware the records were measured on; a
database applies only to that target.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.tir_integration import _normalize_mod

from .target import TargetLike, target_key

__all__ = ["SCHEDULES_DIR", "WORKLOAD_FILE", "RECORD_FILE", "CHOICES_FILE", "default_db_dir", "has_database",
           "open_database", "resolve_database", "normalize", "TunedSpec"]

#: the repository folder holding the shipped databases, one sub-folder per target key
SCHEDULES_DIR: Path = Path(__file__).resolve().parent
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
#: tuned sum-then-shift kernel shapes in a database folder (:mod:`schedules.shape_choices`)
CHOICES_FILE = "sum_then_shift.json"

#: what ``compile(tuned=...)`` accepts: "auto", None, a folder, or a MetaSchedule Database
TunedSpec = Any

_DB_CACHE: dict[tuple[str, int, int], Any] = {}


def default_db_dir(target: TargetLike) -> Path:
    """``schedules/<target_key>/`` of this repository."""
    return SCHEDULES_DIR / target_key(target)


def has_database(db_dir: str | os.PathLike | None) -> bool:
    """Whether ``db_dir`` holds a non-empty JSONDatabase."""
    if db_dir is None:
        return False
    p = Path(db_dir)
    return (p / WORKLOAD_FILE).is_file() and (p / RECORD_FILE).is_file() and (p / RECORD_FILE).stat().st_size > 0


def open_database(db_dir: str | os.PathLike) -> Any:
    """Open an existing JSONDatabase, cached per process by folder, size and mtime (re-read after tuning)."""
    p = Path(db_dir).resolve()
    st = (p / RECORD_FILE).stat()
    key = (str(p), int(st.st_mtime_ns), int(st.st_size))
    db = _DB_CACHE.get(key)
    if db is None:
        db = ms.database.JSONDatabase(work_dir=str(p), allow_missing=False)
        _DB_CACHE[key] = db
    return db


def resolve_database(tuned: TunedSpec, target: TargetLike) -> tuple[Any | None, str | None]:
    """``(database, where)`` for ``compile(tuned=...)``; ``(None, None)`` means default schedules.

    * ``"auto"``: ``schedules/<target_key>/`` when it holds a database, else none;
    * ``None`` (or ``"none"``): none;
    * a folder: that folder, or its ``<target_key>/`` sub-folder; a folder with neither is an error, unless
      it holds tuned sum-then-shift shapes only (``CHOICES_FILE``: no database, ``(None, None)``);
    * a MetaSchedule ``Database``: used as is (``where`` is ``"<Database>"``).

    Raises:
        ValueError: a folder that holds no database for this target.
    """
    if tuned is None or (isinstance(tuned, str) and tuned.lower() == "none"):
        return None, None
    if isinstance(tuned, str) and tuned == "auto":
        p = default_db_dir(target)
        return (open_database(p), str(p)) if has_database(p) else (None, None)
    if isinstance(tuned, (str, os.PathLike)):
        p = Path(tuned)
        for cand in (p, p / target_key(target)):
            if has_database(cand):
                return open_database(cand), str(cand)
        if any((cand / CHOICES_FILE).is_file() for cand in (p, p / target_key(target))):
            return None, None           # tuned sum-then-shift shapes only (schedules.shape_choices)
        raise ValueError(f"tuned={str(tuned)!r}: no tuning database there (nor in its {target_key(target)}/ "
                         f"sub-folder); run `shiftcomp tune` first or pass tuned='auto' or None")
    if isinstance(tuned, ms.database.Database):
        return tuned, "<Database>"
    raise TypeError(f"tuned must be 'auto', None, a folder or a MetaSchedule Database, not {type(tuned).__name__}")


def normalize(prim: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """The module MetaSchedule keys a PrimFunc's records by (``{"main": prim}`` with a global symbol)."""
    return _normalize_mod(prim)


