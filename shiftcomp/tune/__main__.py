"""``python -m shiftcomp.tune``: tune zoo models and benchmark layer cases into ``schedules/<target_key>/``."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from schedules.database import default_db_dir
from schedules.target import resolve_target
from shiftcomp.bench.cases import default_shift_config, find_cases, to_shift
from shiftcomp.models import INPUT_SHAPES, get_model

from .api import tune
from .measure import RPCSpec
from .records import database_summary
from .tasks import SIDES


def _append_tuning_log(wd: Path, line: str) -> None:
    p = wd / "TUNING.md"
    if not p.exists():
        p.write_text("# Tuning log of this database\n\nOne line per `python -m shiftcomp.tune` run (budget = measured "
                     "candidates in total; the database keeps the best record per kernel; manual x86 shift-kernel "
                     "schedules are stored as records too).\n\n")
    with open(p, "a") as f:
        f.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Tune zoo models (shift kernels, shift glue, float baseline) and/or the benchmark layer cases."""
    ap = argparse.ArgumentParser(prog="python -m shiftcomp.tune", description=main.__doc__)
    ap.add_argument("--models", nargs="*", default=[], help="zoo model names (shiftcomp.models)")
    ap.add_argument("--batches", nargs="*", type=int, default=[1])
    ap.add_argument("--layers", nargs="*", default=None,
                    help="benchmark layer cases to tune (names from shiftcomp.bench.cases; 'all' for every case)")
    ap.add_argument("--sides", nargs="*", default=list(SIDES), choices=SIDES)
    ap.add_argument("--trials", type=int, default=64, help="measured candidates in total, per model or layer")
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--work-dir", default=None, help="database folder (default schedules/<target_key>/)")
    ap.add_argument("--max-seconds", type=float, default=None, help="soft wall-clock budget per model or layer")
    ap.add_argument("--weight-bits", type=int, default=5)
    ap.add_argument("--act-bits", type=int, nargs=2, default=[3, 5])
    ap.add_argument("--rpc", default=None, help="tracker host:port:key to measure through TVM RPC")
    ap.add_argument("--no-record-manual", action="store_true", help="do not store the manual schedules as records")
    ap.add_argument("--keep-logs", action="store_true", help="keep MetaSchedule's per-task logs/ in the database dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tgt = resolve_target(a.target)
    wd = Path(a.work_dir) if a.work_dir else default_db_dir(tgt)
    wd.mkdir(parents=True, exist_ok=True)
    rpc = RPCSpec.parse(a.rpc) if a.rpc else None
    cfg = default_shift_config(a.weight_bits, tuple(a.act_bits))
    jobs = []
    for name in a.models:
        torch.manual_seed(0)
        sm = to_shift(get_model(name).eval(), cfg)
        for b in a.batches:
            jobs.append((f"{name}/b{b}", sm, (torch.randn(b, *INPUT_SHAPES[name]),)))
    if a.layers is not None:
        for c in find_cases(None if a.layers in ([], ["all"]) else a.layers):
            jobs.append((f"layer:{c.name}", to_shift(c.float_module(), cfg), c.example_inputs()))
    for label, sm, xs in jobs:
        t0 = time.time()
        s = tune(sm, xs, tgt, a.trials, wd, sides=a.sides, rpc=rpc, max_seconds=a.max_seconds,
                 record_manual=not a.no_record_manual)
        line = (f"- `{label}` trials={a.trials} act_bits={tuple(a.act_bits)} w_bits={a.weight_bits} "
                f"sides={a.sides} tasks={len(s.tasks)} measured={s.measured} wall={time.time() - t0:.0f}s "
                f"loadavg={tuple(round(v, 2) for v in os.getloadavg())} measured_on={s.measured_on}")
        _append_tuning_log(wd, line)
        print(line, flush=True)
    if not a.keep_logs:
        shutil.rmtree(wd / "logs", ignore_errors=True)
    print(database_summary(wd), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
