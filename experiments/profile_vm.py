#!/usr/bin/env python
"""Where a compiled model's time goes: every call of the Relax VM timed in place (``vm.set_instrument``).

    PYTHONPATH=$PWD python experiments/profile_vm.py --model resnet20 --batch 64 --threads 1 --out runs/profile_vm

The model is ``get_model(name)`` converted to Q 5-bit, Q(3,5) (as in ``bench_end_to_end.py``) and compiled
with default ``sc.compile``. Each kernel call is timed between the VM's before/after hooks on real
activations and weights (unlike ``shiftcomp.bench.profile_model``, which times kernels standalone on random
inputs), summed over ``--rounds`` inferences. The hook itself costs a Python call per kernel, so the
instrumented total exceeds the plain latency, also printed (and torch eager's, in the same run). Writes
``<out>/profile_<model>_b<batch>_t<threads>.{csv,md}``: per PrimFunc, calls per inference, ms per
inference and share, grouped into conv kernels (with their fused epilogues), quantising packs and glue.
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))      # bench_end_to_end


def group(name: str) -> str:
    """The kind of a VM call by its name."""
    if name.startswith("shift_prologue"):
        return "quantising pack"
    if name.startswith(("shift_", "adder_")):
        return "shift kernel (+ fused epilogue)"
    if name.startswith("vm.builtin"):
        return "VM builtins"
    return "glue"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="runs/profile_vm")
    args = ap.parse_args(argv)

    import torch
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from bench_end_to_end import cpu_summary, set_threads, shift_model
    from shiftcomp.compiler import compile as sc_compile
    from shiftcomp.models import INPUT_SHAPES

    env = cpu_summary()
    set_threads(args.threads)
    float_model, sm = shift_model(args.model, 5, (3, 5))
    x = torch.randn(args.batch, *INPUT_SHAPES[args.model])
    cm = sc_compile(sm, x, tuned=None)
    dev = tvm.cpu(0)
    vm = VirtualMachine(cm.executable, dev)
    vm_args = [tvm.runtime.tensor(x.numpy(), dev)] + [tvm.runtime.tensor(w, dev) for w in cm.weights.arrays]
    main_fn = vm["main"]
    main_fn(*vm_args)

    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    started: dict[str, float] = {}

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            started[symbol] = time.perf_counter()
        else:
            spent[symbol] += time.perf_counter() - started[symbol]
            calls[symbol] += 1
        return 0

    vm.set_instrument(instrument)
    for _ in range(args.rounds):
        main_fn(*vm_args)
    instrumented = sum(spent.values()) / args.rounds * 1e3

    run = cm.vm_runner(x)
    run()
    t0 = time.perf_counter()
    for _ in range(args.rounds * 3):
        run()
    plain = (time.perf_counter() - t0) / (args.rounds * 3) * 1e3
    with torch.no_grad():
        float_model(x)
        t0 = time.perf_counter()
        for _ in range(args.rounds * 3):
            float_model(x)
        torch_ms = (time.perf_counter() - t0) / (args.rounds * 3) * 1e3

    rows = [{"kernel": k, "group": group(k), "calls": calls[k] // args.rounds,
             "ms": round(v / args.rounds * 1e3, 3), "share": round(v / args.rounds * 1e3 / instrumented, 4)}
            for k, v in sorted(spent.items(), key=lambda kv: -kv[1])]
    groups: dict[str, float] = collections.defaultdict(float)
    for r in rows:
        groups[r["group"]] += r["ms"]
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"profile_{args.model}_b{args.batch}_t{args.threads}")
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = [f"CPU: {env['cpu']}; ISA: {env['isa']}; {env['cores']} cores; load {env['load']}; "
          f"{args.model} batch {args.batch}, {args.threads} thread(s), {args.rounds} instrumented rounds", "",
          f"plain latency {plain:.2f} ms; instrumented total {instrumented:.2f} ms; torch eager {torch_ms:.2f} ms", "",
          "| group | ms | share |", "|---|---|---|"]
    md += [f"| {g} | {ms:.2f} | {ms / instrumented:.1%} |" for g, ms in sorted(groups.items(), key=lambda kv: -kv[1])]
    md += ["", "| kernel | group | calls | ms | share |", "|---|---|---|---|---|"]
    md += [f"| {r['kernel']} | {r['group']} | {r['calls']} | {r['ms']} | {r['share']:.1%} |" for r in rows]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md[:9 + len(groups)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
