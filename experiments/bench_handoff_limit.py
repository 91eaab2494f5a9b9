#!/usr/bin/env python
"""Where the integer handoff pays: ResNet-20 built with the handoff's size limit, without it, and with no
handoff, timed interleaved in one process.

    PYTHONPATH=$PWD python experiments/bench_handoff_limit.py --batches 32 64 --threads 1 2 --out runs/handoff

Builds of ``get_model("resnet20")`` (Q 5-bit, Q(3,5), as ``bench_end_to_end.py``), all from default
``sc.compile`` but for ``passes.fuse_epilogue.HANDOFF_MAX_PACKED_BYTES`` at build time:

* ``limit``  the shipped limit (the default build);
* ``every``  no limit: every conv1 -> conv2 pair hands over;
* ``none``   ``compile(fuse="epilogue")``: no handoff;
* ``--limits`` adds a build per extra limit in MiB (``limit_<n>MiB``).

Each row names how many layers hand over. Medians of ``--rounds`` interleaved samples
(``bench_end_to_end.time_interleaved``); writes ``<out>/handoff_limit.{csv,md}``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))      # bench_end_to_end


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--limits", type=float, nargs="*", default=[], help="extra limits in MiB")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--min-ms", type=float, default=100.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if min(args.batches + args.threads) < 1 or args.rounds < 1 or any(m < 0 for m in args.limits):
        ap.error("batches, threads and rounds must be >= 1, limits >= 0")

    import torch

    from bench_end_to_end import cpu_summary, set_threads, shift_model, time_interleaved
    from passes import fuse_epilogue
    from shiftcomp.bench.report import write_experiment_table
    from shiftcomp.compiler import compile as sc_compile
    from shiftcomp.models import INPUT_SHAPES

    env = cpu_summary()
    shipped = fuse_epilogue.HANDOFF_MAX_PACKED_BYTES
    builds = {"limit": (shipped, True), "every": (float("inf"), True), "none": (shipped, "epilogue")}
    builds.update({f"limit_{m:g}MiB": (m * 2 ** 20, True) for m in args.limits})
    _, sm = shift_model("resnet20", 5, (3, 5))
    rows = []
    for batch in args.batches:
        x = torch.randn(batch, *INPUT_SHAPES["resnet20"])
        runners, handoffs = {}, {}
        try:
            for name, (limit, fuse) in builds.items():
                fuse_epilogue.HANDOFF_MAX_PACKED_BYTES = limit
                cm = sc_compile(sm, x, tuned=None, fuse=fuse)
                handoffs[name] = sum(1 for e in cm.epilogues if e.packed_for)
                run = cm.vm_runner(x)
                runners[name] = lambda _x, run=run: run()
        finally:
            fuse_epilogue.HANDOFF_MAX_PACKED_BYTES = shipped
        for threads in args.threads:
            set_threads(threads)
            med = time_interleaved(runners, x, args.rounds, args.min_ms)
            for name, ms in med.items():
                rows.append({"batch": batch, "threads": threads, "build": name, "handoffs": handoffs[name],
                             "ms": round(ms, 3), "vs_none": round(ms / med["none"], 3)})
                print(rows[-1], flush=True)

    header = (f"CPU: {env['cpu']}; ISA: {env['isa']}; {env['cores']} cores; load {env['load']}; ResNet-20 Q 5-bit, "
              f"Q(3,5); shipped limit {shipped / 2 ** 20:g} MiB; {args.rounds} interleaved rounds, median ms")
    print(write_experiment_table(rows, os.path.join(args.out, "handoff_limit"), header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
