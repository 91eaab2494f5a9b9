#!/usr/bin/env python
"""End-to-end latency of default ``sc.compile`` (sum-then-shift kernels) against its baselines, in one run.

    python experiments/bench_end_to_end.py --out runs/e2e

ResNet-20 (``get_model("resnet20")``, Q 5-bit, Q(3,5) activations) at each batch and thread count:

* ``shiftcomp``  default ``sc.compile`` (sum-then-shift for conv / batched dense);
* ``no_int_handoff``  ``sc.compile(..., fuse="epilogue")``: the same kernels and fused epilogues, but every
  kernel stores float32 and a quantising pack runs before each shift conv (no integer handoff between
  layers, ``schedules/packed_store.py``);
* ``per_term``   ``sc.compile(..., kernels=ManualKernels(PER_TERM_FAMILIES))``: the kernels that were the
  default before (one variable shift per term);
* ``tvm_float``  the same import compiled with ``lower=False`` (float multiplies, TVM's default schedules);
* ``torch``      the unconverted float model in torch eager;
* with ``--tuned DIR`` (a ``shiftcomp tune`` folder): ``shiftcomp_tuned`` (``compile(tuned=DIR)``) and
  ``tvm_float_tuned``, the float twin that ``shiftcomp.tune`` tunes (``shiftcomp.baseline``: power-of-two
  weights in float32 convs, no activation quantisation) built with the folder's records
  (``shiftcomp.bench.backends.build_tvm_float``): equal tuning; ``vs_tvm_float_tuned`` compares to it.

MobileNetV2 at batch 1: ``shiftcomp`` and ``no_int_handoff`` against ``torch``. Candidates are interleaved (one timed sample of
each per round), each sample is the mean of enough calls to last ``--min-ms``; the tables report medians
and ratios to torch and to TVM-float. Prints and records the CPU model, ISA flags and load (``uptime``).
Writes ``<out>/end_to_end.csv`` and ``<out>/end_to_end.md``.
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_summary() -> dict[str, str]:
    """CPU model, SIMD flags of interest and load average."""
    model, flags = platform.processor(), ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "asimd")
                                 if f in have)
    except (OSError, subprocess.SubprocessError):
        pass
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return {"cpu": model, "isa": flags, "load": load, "cores": str(os.cpu_count())}


def set_threads(n: int) -> None:
    """Thread count of both runtimes (TVM's pool is reconfigured in place)."""
    import torch
    import tvm
    torch.set_num_threads(n)
    tvm.get_global_func("runtime.config_threadpool")(1, n)


def time_interleaved(fns: dict, x, rounds: int, min_ms: float) -> dict[str, float]:
    """Median ms per call of each ``fn(x)``, candidates interleaved round by round; each timed sample follows
    half as many untimed calls of the same candidate."""
    import torch
    calls = {}
    with torch.no_grad():
        for name, fn in fns.items():           # warm up, and calls per sample
            fn(x)
            t0 = time.perf_counter()
            fn(x)
            dt = time.perf_counter() - t0
            calls[name] = max(1, int(min_ms / 1e3 / max(dt, 1e-6)))
        samples: dict[str, list[float]] = {n: [] for n in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                # untimed calls first: the previous candidate's runtime (torch's OpenMP workers, TVM's pool)
                # may still spin on the cores for a while after its last call; whoever followed it would pay
                for _ in range(max(1, calls[name] // 2)):
                    fn(x)
                t0 = time.perf_counter()
                for _ in range(calls[name]):
                    fn(x)
                samples[name].append((time.perf_counter() - t0) / calls[name] * 1e3)
    return {n: statistics.median(v) for n, v in samples.items()}


def shift_model(name: str, weight_bits: int, act_bits: tuple[int, int]):
    import torch
    from shiftcomp.config import ShiftConfig
    from shiftcomp.convert import convert
    from shiftcomp.models import get_model
    torch.manual_seed(0)
    float_model = get_model(name).eval()
    sm = convert(copy.deepcopy(float_model), ShiftConfig(mode="Q", weight_bits=weight_bits, act_bits=act_bits))
    return float_model, (sm if sm is not None else float_model).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for end_to_end.csv / .md")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 64])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--min-ms", type=float, default=30.0)
    ap.add_argument("--no-mobilenet", action="store_true")
    ap.add_argument("--tuned", default=None,
                    help="a `shiftcomp tune` folder: also time ResNet-20 compiled with it (shiftcomp_tuned) and the "
                         "float baseline with it (tvm_float_tuned; column vs_tvm_float_tuned)")
    args = ap.parse_args(argv)

    import torch
    from passes.kernels import PER_TERM_FAMILIES, ManualKernels
    from shiftcomp.bench.backends import build_tvm_float
    from shiftcomp.compiler import compile as sc_compile
    from shiftcomp.models import INPUT_SHAPES

    env = cpu_summary()
    print(f"CPU: {env['cpu']} | ISA: {env['isa']} | cores: {env['cores']} | load: {env['load']}", flush=True)
    rows: list[dict] = []

    def run(model_name: str, batch: int, candidates: dict, x) -> None:
        for n in args.threads:
            set_threads(n)
            med = time_interleaved(candidates, x, args.rounds, args.min_ms)
            load = " ".join(f"{v:.2f}" for v in os.getloadavg())
            for cand, ms in med.items():
                row = {"model": model_name, "batch": batch, "threads": n, "candidate": cand, "ms": round(ms, 3),
                       "vs_torch": round(ms / med["torch"], 3),
                       "vs_tvm_float": round(ms / med["tvm_float"], 3) if "tvm_float" in med else "",
                       "vs_tvm_float_tuned": (round(ms / med["tvm_float_tuned"], 3) if "tvm_float_tuned" in med
                                              else ""),
                       "load": load}
                rows.append(row)
                print(row, flush=True)

    float_model, sm = shift_model("resnet20", 5, (3, 5))
    for batch in args.batches:
        x = torch.randn(batch, *INPUT_SHAPES["resnet20"])
        t0 = time.perf_counter()
        cands = {
            "shiftcomp": sc_compile(sm, x, tuned=None),
            "no_int_handoff": sc_compile(sm, x, tuned=None, fuse="epilogue"),
            "per_term": sc_compile(sm, x, tuned=None, kernels=ManualKernels(PER_TERM_FAMILIES)),
            "tvm_float": sc_compile(sm, x, tuned=None, lower=False),
            "torch": float_model,
        }
        if args.tuned:
            cands["shiftcomp_tuned"] = sc_compile(sm, x, tuned=args.tuned)
            # the float twin as shiftcomp.tune tunes it (shiftcomp.baseline), with the folder's records
            cands["tvm_float_tuned"] = (lambda b: lambda _x: b.run())(build_tvm_float(sm, (x,), tuned=args.tuned))
        print(f"resnet20 batch {batch}: compiled in {time.perf_counter() - t0:.0f} s", flush=True)
        run("resnet20", batch, cands, x)

    if not args.no_mobilenet:
        float_model, sm = shift_model("mobilenetv2", 5, (3, 5))
        x = torch.randn(1, *INPUT_SHAPES["mobilenetv2"])
        run("mobilenetv2", 1, {"shiftcomp": sc_compile(sm, x, tuned=None),
                               "no_int_handoff": sc_compile(sm, x, tuned=None, fuse="epilogue"),
                               "torch": float_model}, x)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "end_to_end.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = [f"CPU: {env['cpu']}; ISA: {env['isa']}; {env['cores']} cores; load at start {env['load']}", "",
          "| model | batch | threads | candidate | ms (median) | vs torch eager | vs TVM-float | vs TVM-float tuned "
          "| load |",
          "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['batch']} | {r['threads']} | {r['candidate']} | {r['ms']} | {r['vs_torch']} | "
           f"{r['vs_tvm_float']} | {r['vs_tvm_float_tuned']} | {r['load']} |" for r in rows]
    with open(os.path.join(args.out, "end_to_end.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
