#!/usr/bin/env python
"""Training-step time of a zoo model before and after ``shiftcomp.decompose`` (interleaved, medians).

Each repetition times one SGD step (forward, backward, update) of every variant in turn on the same batch, so
the load of other jobs hits all variants alike; the table reports the median step time, its ratio to the
original model, the parameter count and the decomposition time. Ranks from VBMF depend on the weights: pass
``--weights`` (a trained checkpoint or state_dict) for representative ranks; random weights give others.

    python experiments/bench_decompose.py -a resnet20 --weights /work/runs/models/cifar10/resnet20/fp32_e30/checkpoint.pth.tar
    python experiments/bench_decompose.py -a resnet20 --variants tucker:0.5 cp:0.5 --csv decompose_steps.csv
    python experiments/bench_decompose.py -a resnet20 --variants tucker:0.5 cp:0.5 --compiled   # + inference

``--compiled`` also converts every variant to DeepShift-Q (the benchmarks' default shift config), compiles it
with ``shiftcomp.compile`` (untuned, this host's CPU), checks it bit for bit against the integer reference, and
reports batch-1 inference latency (rounds interleaved over the variants) and the exported artifact's packed
weight bytes and file size.
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import statistics
import subprocess
import time
from typing import Sequence

import torch


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        flags = info.get("Flags", "")
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        return f"{info.get('Model name', platform.processor()).strip()} ({isa})"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"


def _variant(text: str) -> tuple[str, int | float | str]:
    from shiftcomp.training import parse_rank

    method, _, rank = text.partition(":")
    return method, parse_rank(rank or "vbmf")


def _compiled_table(models: dict[str, torch.nn.Module], shape: Sequence[int], rounds: int) -> None:
    import tempfile
    from pathlib import Path

    import shiftcomp as sc
    from shiftcomp.bench import default_shift_config, time_callable, to_shift
    from shiftcomp.reference import exact

    cfg = default_shift_config()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    built = {}
    for name, m in models.items():
        sm = to_shift(m, cfg)
        t = time.perf_counter()
        cm = sc.compile(sm, (x,))
        compile_s = time.perf_counter() - t
        with exact(sm), torch.no_grad():
            bit_exact = torch.equal(cm(x), sm(x))
        with tempfile.TemporaryDirectory() as d:
            info = cm.export(Path(d) / "model.so")
        built[name] = (cm, compile_s, bit_exact, info)
    samples: dict[str, list[float]] = {k: [] for k in built}
    for _ in range(max(1, rounds)):
        for name, (cm, *_rest) in built.items():
            samples[name].append(time_callable(lambda cm=cm: cm(x), repeats=5, max_total_s=10.0).median_ms)
    ref = statistics.median(samples["original"])
    print(f"\nDeepShift-Q {cfg.weight_bits}-bit weights, activations {cfg.act_bits}; batch 1, untuned, "
          f"{torch.get_num_threads()} thread(s), {rounds} interleaved rounds")
    print("| variant | latency (ms, median) | vs original | bit-exact | packed weights (B) | artifact (B) | compile (s) |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, (cm, compile_s, ok, info) in built.items():
        ms = statistics.median(samples[name])
        print(f"| {name} | {ms:.2f} | {ref / ms:.2f}× | {'yes' if ok else 'NO'} | {info.packed_weight_bytes:,} | "
              f"{info.file_bytes:,} | {compile_s:.1f} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-a", "--arch", default="resnet20", help="zoo model (shiftcomp.models)")
    p.add_argument("--weights", default=None, help="trained weights to decompose (checkpoint or state_dict)")
    p.add_argument("--variants", nargs="+", default=["tucker:vbmf", "cp:vbmf"], metavar="METHOD:RANK",
                   help="decompositions to time (rank: int, fraction or vbmf)")
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions (after one warm-up)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv", default=None, help="also write the rows here")
    p.add_argument("--compiled", action="store_true", help="also compile the shift-converted variants and time "
                                                            "batch-1 inference")
    a = p.parse_args(argv)

    import shiftcomp as sc
    from shiftcomp.models import INPUT_SHAPES, get_model
    from shiftcomp.training import load_weights

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base = get_model(a.arch, 10)
    if a.weights:
        load_weights(base, a.weights)
    variants = {"original": (base, 0.0)}
    for text in a.variants:
        method, rank = _variant(text)
        m = copy.deepcopy(base)
        t = time.perf_counter()
        report = sc.decompose(m, sc.DecomposeConfig(method=method, rank=rank))
        variants[f"{method}:{rank}"] = (m, time.perf_counter() - t)
        print(f"{method}:{rank}: {len(report.decomposed)} layers decomposed, {len(report.skipped)} left alone")
    x = torch.randn(a.batch_size, *INPUT_SHAPES[a.arch])
    y = torch.randint(0, 10, (a.batch_size,))
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(a.reps + 1):
        for name, (m, _) in variants.items():
            m.train()
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rep:  # the first round warms up allocators and kernels
                times[name].append(time.perf_counter() - t)
    ref = statistics.median(times["original"])
    rows = [{"variant": k, "params": sum(q.numel() for q in m.parameters()),
             "step_ms": round(1000 * statistics.median(times[k]), 1),
             "speedup": round(ref / statistics.median(times[k]), 3), "decompose_s": round(dt, 2)}
            for k, (m, dt) in variants.items()]
    print(f"{a.arch}, batch {a.batch_size}, {a.threads} thread(s), {a.reps} interleaved reps; CPU {_cpu_model()}; "
          f"load {os.getloadavg()[0]:.1f}")
    print("| variant | parameters | train step (ms, median) | speed-up | decomposition (s) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['params']:,} | {r['step_ms']} | {r['speedup']:.2f}× | {r['decompose_s']} |")
    if a.compiled:
        _compiled_table({k: m for k, (m, _) in variants.items()}, INPUT_SHAPES[a.arch], a.reps)
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
