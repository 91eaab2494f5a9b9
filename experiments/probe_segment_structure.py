#!/usr/bin/env python
"""What the sum-then-shift conv kernel's time depends on: the same layer, the same number of terms, four
code structures, timed interleaved in one process.

    PYTHONPATH=$PWD python experiments/probe_segment_structure.py --out experiments/results/segment_structure

Layer: ResNet-20's 16 -> 16 conv at 32 x 32 (144 terms per output channel), ``--batch`` images, 1 thread.
Codes (every weight nonzero, so each structure has 144 terms per channel):

* ``he``: He-normal floats rounded to 5-bit powers of two (what a converted model has; ~9 levels);
* ``uniform``: 9 levels x (8 positive + 8 negative) terms per channel, the same trip counts everywhere;
* ``jitter``: 9 levels, 18 runs of random lengths (the same number of segments as ``uniform``, the loop
  trip counts vary from segment to segment like ``he``'s);
* ``single``: one level, 72 positive then 72 negative terms (one segment per channel).

``uniform`` vs ``jitter`` isolates the cost of unpredictable loop exits (same segments, same terms); ``single``
vs ``uniform`` the cost of segments themselves (widen, shift, loop setup). Writes ``<out>.csv`` / ``.md`` with
ms, segments per channel and G int16 lane-terms per second, and the CPU model and ISA.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

C = O = 16
HW = 32
TERMS = C * 9


def _codes(kind: str, rng: np.random.Generator) -> np.ndarray:
    c = np.zeros((O, TERMS), np.int8)
    if kind == "he":
        w = rng.normal(0.0, np.sqrt(2.0 / TERMS), size=(O, TERMS))
        shift = np.clip(np.round(np.log2(np.abs(w))), -15, 0).astype(np.int64)
        c = (np.sign(w) * (shift - shift.min() + 1)).astype(np.int8)
    elif kind == "uniform":
        for o in range(O):
            perm = rng.permutation(TERMS)
            for level in range(9):
                run = perm[level * 16:(level + 1) * 16]
                c[o, run[:8]], c[o, run[8:]] = level + 1, -(level + 1)
    elif kind == "jitter":
        for o in range(O):
            runs = np.split(rng.permutation(TERMS), np.sort(rng.choice(np.arange(1, TERMS), 17, replace=False)))
            for r, run in enumerate(runs):
                c[o, run] = (r // 2 + 1) * (1 if r % 2 == 0 else -1)
    elif kind == "single":
        c[:, :TERMS // 2], c[:, TERMS // 2:] = 1, -1
    else:
        raise ValueError(kind)
    return c.reshape(O, C, 3, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default="runs/segment_structure")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.rounds < 1:
        ap.error("--batch and --rounds must be >= 1")

    import tvm

    from schedules import sum_then_shift as sts
    from schedules.compute import Conv2dSpec
    from shiftcomp.bench import machine_info
    from shiftcomp.bench.report import write_experiment_table

    pool = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if pool is not None:
        pool(1, 1)
    rng = np.random.default_rng(0)
    spec = Conv2dSpec(args.batch, C, HW, HW, O, 3, 3, stride=1, padding=1, frac_bits=5, s0=-15,
                      acc_dtype="int32", has_bias=False)
    x = rng.integers(-128, 128, size=spec.x_shape).astype(np.int32)
    tens = lambda a: tvm.runtime.tensor(np.ascontiguousarray(a))  # noqa: E731
    calls, segments = {}, {}
    for kind in ("he", "uniform", "jitter", "single"):
        k = sts.build("conv2d", spec, _codes(kind, rng), "llvm", (3, 5))
        mod = k.compile().module
        packed = tens(np.zeros(k.packed_shape, k.lane_dtype))
        mod["pack"](tens(x), packed)
        w = [tens(a) for a in k.weight_inputs]
        out = tens(np.zeros(spec.out_shape, np.float32))
        calls[kind] = (lambda m=mod["main"], p=packed, w=w, o=out: m(p, *w, o))
        segments[kind] = k.weight_inputs[1].shape[0] / O
    for fn in calls.values():
        fn()
    times = {k: [] for k in calls}
    for _ in range(args.rounds):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    lane_terms = args.batch * O * TERMS * HW * HW
    info = machine_info()
    rows = [{"codes": k, "segments_per_channel": round(segments[k], 2),
             "ms": round(statistics.median(v) * 1e3, 3),
             "g_lane_terms_per_s": round(lane_terms / statistics.median(v) / 1e9, 2)} for k, v in times.items()]
    text = write_experiment_table(
        rows, args.out, f"CPU: {info.get('cpu_model')} (LLVM {info.get('llvm_cpu')}); 16->16 conv @ 32x32, batch "
        f"{args.batch}, 1 thread, {args.rounds} interleaved rounds, median; load {os.getloadavg()[0]:.2f}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
