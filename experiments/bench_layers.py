#!/usr/bin/env python
"""Per-layer benchmark: shiftcomp vs TVM float vs PyTorch eager vs torch.compile (+ DeepShift constants).

    python experiments/bench_layers.py --out runs/bench --threads 2
    python experiments/bench_layers.py --cases r20_conv16@32 linear1x4096x4096 --backends shiftcomp torch

Writes <out>/layers.{csv,md,png,json}. See BENCHMARKS.md for the methodology and latest numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    from shiftcomp import bench

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=None,
                    help="layer case names (default: all): " + " ".join(c.name for c in bench.DEFAULT_LAYER_CASES))
    ap.add_argument("--backends", nargs="*", default=list(bench.BACKENDS), choices=list(bench.BACKENDS))
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--db", default=None, help="tuning database dir (default schedules/<target_key>/ if present)")
    ap.add_argument("--untuned", action="store_true", help="ignore any tuning database")
    ap.add_argument("--threads", type=int, default=None, help="threads for every backend (default: physical cores)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-repeat-ms", type=float, default=20.0)
    ap.add_argument("--weight-bits", type=int, default=5)
    ap.add_argument("--act-bits", type=int, nargs=2, default=[3, 5], metavar=("I", "F"))
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args(argv)

    cfg = bench.default_shift_config(a.weight_bits, tuple(a.act_bits)) if {"shiftcomp", "tvm-float"} & set(a.backends) else None
    t0 = time.time()
    load0 = os.getloadavg()
    rows = bench.run_layer_bench(a.cases, a.backends, a.target, None if a.untuned else (a.db or "auto"), a.threads, a.warmup,
                                 a.repeats, a.min_repeat_ms, cfg)
    meta = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
            "loadavg_before": load0, "loadavg_after": os.getloadavg(), "wall_s": round(time.time() - t0, 1),
            "shift_config": {"weight_bits": a.weight_bits, "act_bits": a.act_bits, "mode": "Q"},
            "errors": rows.errors}
    paths = bench.write_outputs(rows, a.out, "layers", meta, plot=not a.no_plot)
    print(bench.to_markdown(rows))
    print({k: str(v) for k, v in paths.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
