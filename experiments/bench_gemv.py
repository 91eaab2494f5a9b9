#!/usr/bin/env python
"""Batch-1 dense (GEMV) shift kernels vs torch float32 at 1 and 2 threads, in one process.

    python experiments/bench_gemv.py [--rounds 15] [--number 5] [--threads 1 2] [--cold MB] [--mcpu CPU] [--out runs/bench_gemv]

Candidates, timed *interleaved* (per round each runs ``number`` calls; median over rounds of the per-call
wall time; ``--cold MB``: one call per round after writing MB megabytes, so nothing is cached), per thread
count:

* ``table_nibble_gather`` / ``table_nibble`` / ``table_byte``: ``schedules.table_gemv`` -- the table
  pre-kernel on int32 ``x_q`` plus the kernel, each variant (``auto`` = the one ``sc.compile`` picks, ``holds``
  is judged on it; ``tail_pct`` = weights outside the nibble variants' 7-level window, gathered a vector of
  outputs at a time by ``nibble_gather``, one term at a time by ``nibble``);
* ``column``: ``schedules.build_shift_kernel("dense", ...)``, the per-term column-block kernel (the batch-1
  default before the table kernel);
* ``torch``: ``F.linear`` in float32 (weights ``sign * 2**shift``).

Weights: He-normal floats rounded to powers of two (``shift = round(log2|w|)`` clipped to [-15, 0]: DeepShift
Q, 5-bit codes; the ``8 levels`` case clips to [-10, -3]: two bytes per term), activations 8-bit Q(3,5), bias. The table kernel's output must equal the column kernel's bit
for bit (CSV ``equal``). Wall times: the machine is shared (the report prints the load average), compare the
ratios within one run. TVM's pool does not spin between calls here (``TVM_THREAD_POOL_SPIN_COUNT=0``) and torch
workers are passive, so the interleaved candidates do not steal each other's CPUs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")

import numpy as np

# name: (K, N, shift range): 5-bit codes (15 levels, 3 bytes per term) and 8 levels (2 bytes per term)
CASES = {"gemv4096": (4096, 4096, (-15, 0)), "gemv1024": (1024, 1024, (-15, 0)),
         "gemv4096 8 levels": (4096, 4096, (-10, -3))}
F_BITS, ACT_BITS = 5, (3, 5)
GOAL = 4.0   # torch / table at 1 and 2 threads


def _build(K: int, N: int, shift_range: tuple, target):
    import torch
    import tvm

    from passes.accumulator import plan_accumulator
    from schedules import DenseSpec, build_shift_kernel, dense_weight_codes
    from schedules import table_gemv as tg
    from schedules.compute import weight_codes

    rng = np.random.default_rng(0)
    w = rng.normal(0.0, np.sqrt(2.0 / K), size=(N, K))
    sign = np.sign(w).astype(np.int64)
    shift = np.clip(np.round(np.log2(np.abs(w))), *shift_range).astype(np.int64)
    s0 = int(shift[sign != 0].min())
    acc = plan_accumulator("gemv", shift, sign, ACT_BITS, s0).dtype
    spec = DenseSpec(1, K, N, frac_bits=F_BITS, s0=s0, acc_dtype=acc, has_bias=True)
    a = 2 ** (sum(ACT_BITS) - 1)
    x = rng.integers(-a, a, size=(1, K))
    bias = rng.normal(0, 0.1, size=N).astype(np.float32)
    tens = lambda v: tvm.runtime.tensor(np.ascontiguousarray(v))
    x_t, b_t = tens(x.astype(np.int32)), tens(bias)

    codes = weight_codes(shift, sign, s0)
    tables, outs = {}, {}
    for variant in tg.VARIANTS:
        k = tg.build(spec, codes, target, ACT_BITS, variant=variant)
        mod = k.compile().module
        tbl = tens(np.zeros(k.table_shape, k.table_dtype))
        w_t = [tens(v) for v in k.weight_inputs]
        outs[variant] = tens(np.zeros((1, N), np.float32))
        tables[variant] = (mod["table"], mod["main"], tbl, w_t, outs[variant])

    col = tvm.tirx.build(build_shift_kernel("dense", spec, target).with_attr("global_symbol", "main"), target=target)
    f_col = col["main"]
    codes_t = tens(dense_weight_codes(shift, sign, s0))
    out_col = tens(np.zeros((1, N), np.float32))

    xf = torch.tensor(x * 2.0 ** -F_BITS, dtype=torch.float32)
    wf = torch.tensor(sign * 2.0 ** shift, dtype=torch.float32)
    bt = torch.tensor(bias)
    def run_table(f_tab, f_main, tbl, w_t, out):
        f_tab(x_t, tbl)
        f_main(tbl, *w_t, b_t, out)

    fns = {f"table_{v}": (lambda v=v: run_table(*tables[v])) for v in tg.VARIANTS}
    fns.update({
        "column": lambda: f_col(x_t, codes_t, b_t, out_col),
        "torch": lambda: torch.nn.functional.linear(xf, wf, bt),
    })

    def equal() -> bool:
        return all(np.array_equal(o.numpy().view(np.int32), out_col.numpy().view(np.int32)) for o in outs.values())
    w0, tail = tg.nibble_window(codes)
    info = {"terms": int((sign != 0).sum()), "auto": tg.choose_variant(codes), "window": f"{w0}..{w0 + 6}",
            "tail_pct": round(100.0 * tail / max(1, int((sign != 0).sum())), 2)}
    return fns, equal, info


def _interleaved(fns: dict, rounds: int, number: int, flush: np.ndarray | None = None) -> dict:
    """Median ms per call; ``flush``: write this array before every single timed call (cold caches)."""
    for fn in fns.values():
        fn()
        fn()
    t = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            if flush is not None:
                flush += 1
                t0 = time.perf_counter()
                fn()
                t[k].append(time.perf_counter() - t0)
                continue
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            t[k].append((time.perf_counter() - t0) / number)
    return {k: statistics.median(v) * 1e3 for k, v in t.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--number", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cases", nargs="*", default=["gemv4096"], help=f"subset of {list(CASES)}")
    p.add_argument("--out", default="runs/bench_gemv")
    p.add_argument("--cold", type=int, default=0, metavar="MB",
                   help="write MB megabytes before every timed call (one call per round): caches cold, the "
                        "weights streamed from DRAM as in a model too large for the cache")
    p.add_argument("--mcpu", default=None,
                   help="build for this LLVM CPU instead of the host's (e.g. haswell: the AVX2 code on an AVX-512 "
                        "machine; it must run here)")
    args = p.parse_args(argv)
    import torch

    from schedules import resolve_target
    from schedules import table_gemv as tg
    from schedules.sum_then_shift import vector_bits
    from shiftcomp.bench import machine_info, set_threads
    from shiftcomp.bench.report import write_experiment_table

    target = resolve_target("llvm" if args.mcpu is None else
                            {"kind": "llvm", "mcpu": args.mcpu, "num-cores": os.cpu_count() or 1})
    info = machine_info()
    isa = f"{target.attrs.get('mcpu')}, {vector_bits(target)}-bit vectors"
    load0 = os.getloadavg()
    print(f"CPU: {info.get('cpu_model')} | {isa} | load {load0[0]:.2f}", flush=True)
    rows = []
    flush = np.ones(args.cold * 2 ** 20 // 8) if args.cold else None
    for name in args.cases:
        fns, equal, cinfo = _build(*CASES[name], target)
        for n in args.threads:
            set_threads(n)
            with torch.no_grad():
                med = _interleaved(fns, args.rounds, args.number, flush)
            row = {"case": name, "threads": n, **cinfo}
            row.update({f"{k}_ms": round(v, 4) for k, v in med.items()})
            best = med["table_" + cinfo["auto"]]          # what sc.compile picks
            for v in [f"table_{v}" for v in tg.VARIANTS] + ["column"]:
                row[f"torch_over_{v}"] = round(med["torch"] / med[v], 2)
            row["gterms_per_s"] = round(cinfo["terms"] / (best * 1e-3) / 1e9, 2)
            row["goal"] = f">= {GOAL}x"
            row["holds"] = med["torch"] / best >= GOAL
            row["equal"] = equal()
            rows.append(row)
            print(row, flush=True)
    load1 = os.getloadavg()
    cols = (["case", "threads", "auto", "tail_pct"] + [f"table_{v}_ms" for v in tg.VARIANTS] + ["column_ms", "torch_ms"]
            + [f"torch_over_table_{v}" for v in tg.VARIANTS] + ["torch_over_column", "gterms_per_s", "goal", "holds",
                                                               "equal"])
    text = write_experiment_table(
        rows, args.out, f"CPU: {info.get('cpu_model')} ({isa}); {args.rounds} interleaved rounds x "
        + (f"1 call after writing {args.cold} MB (cold caches)" if args.cold else f"{args.number} calls")
        + f", median wall ms per call; load average {load0[0]:.2f} -> {load1[0]:.2f} on {os.cpu_count()} CPUs",
        cols)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
