#!/usr/bin/env python
"""Shift-kernel micro benchmark (x86): each hot kernel shape vs torch float32, in one run.

    TVM_NUM_THREADS=2 python experiments/bench_kernels.py [--threads 2] [--repeats 30] [--out runs/bench_kernels.md]
    python experiments/bench_kernels.py --cases dense1x4096x4096 conv16@32

Kernels are built with ``schedules.build_shift_kernel`` (int32 accumulation, 5-bit weights: shifts
-8..-1 -> codes in +-1..8 with ~1/16 zero codes, activations 8-bit fixed point) and timed with TVM's
``time_evaluator`` (best of ``--repeats`` runs, each >= ``--min-ms`` ms: on this shared 2-core machine the
median moves 2x between runs, the minimum much less); torch f32 (``F.linear`` / ``F.conv2d``,
``torch.set_num_threads(threads)``) timed in the same process, best of the same count.
Prints a markdown table (also written to ``--out``) with the ratio shift/torch and the achieved shift-add
throughput (terms/s = weights * output pixels / time; conv terms include padded taps).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch workers must not spin during TVM runs

import numpy as np  # noqa: E402

CASES = {
    # name: ("dense", M, K, N) | ("conv", C, H, W, O, groups)
    "dense1x4096x4096": ("dense", 1, 4096, 4096),
    "dense1x512x512": ("dense", 1, 512, 512),
    "conv16@32": ("conv", 16, 32, 32, 16, 1),
    "conv32@16": ("conv", 32, 16, 16, 32, 1),
    "conv64@8": ("conv", 64, 8, 8, 64, 1),
    "conv64@32": ("conv", 64, 32, 32, 64, 1),
    "conv128@16": ("conv", 128, 16, 16, 128, 1),
    "conv256@8": ("conv", 256, 8, 8, 256, 1),
    "conv512@4": ("conv", 512, 4, 4, 512, 1),
    "dw64@32": ("conv", 64, 32, 32, 64, 64),
    "dw144@56": ("conv", 144, 56, 56, 144, 144),
    "dw192@28": ("conv", 192, 28, 28, 192, 192),
    "dw384@14": ("conv", 384, 14, 14, 384, 384),
}


def _median_torch(fn, repeats: int, min_ms: float) -> float:
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    number = max(1, int(min_ms / 1e3 / one))
    res = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        res.append((time.perf_counter() - t0) / number)
    return min(res)


def bench_case(name, case, threads, repeats, min_ms, target, phase="tvm", torch_res=None):
    import tvm
    from schedules import Conv2dSpec, DenseSpec, build_shift_kernel, conv2d_weight_codes, dense_weight_codes

    rng = np.random.default_rng(0)
    dev = tvm.cpu()
    if case[0] == "dense":
        _, M, K, N = case
        spec = DenseSpec(M, K, N, frac_bits=5, s0=-8, acc_dtype="int32", has_bias=True)
        shape_w = (N, K)
        x = rng.integers(-128, 128, size=(M, K), dtype=np.int32)
        kind = "dense"
        terms = M * K * N
    else:
        _, C, H, W, O, G = case
        spec = Conv2dSpec(1, C, H, W, O, 3, 3, stride=1, padding=1, groups=G, frac_bits=5, s0=-8,
                          acc_dtype="int32", has_bias=True)
        shape_w = (O, C // G, 3, 3)
        x = rng.integers(-128, 128, size=(1, C, H, W), dtype=np.int32)
        kind = "conv2d"
        oh, ow = spec.out_hw
        terms = O * (C // G) * 9 * oh * ow
    shift = rng.integers(-8, 0, size=shape_w)
    sign = rng.choice([-1, 1], size=shape_w) * (rng.random(shape_w) > 1 / 16)
    if kind == "dense":
        codes = dense_weight_codes(shift, sign, spec.s0)
    else:
        codes = conv2d_weight_codes(shift, sign, spec.s0, spec.groups)
    bias = rng.standard_normal(shape_w[0]).astype(np.float32)
    if phase == "torch":
        return _torch_case(kind, spec, x, shift, sign, bias, threads, repeats, min_ms)
    prim = build_shift_kernel(kind, spec, target).with_attr("global_symbol", "main")
    t0 = time.time()
    ex = tvm.compile(tvm.IRModule({"main": prim}), target=target)
    build_s = time.time() - t0
    args = [tvm.runtime.tensor(a, dev) for a in (x, codes, bias)]
    out = tvm.runtime.tensor(np.zeros(spec.out_shape, np.float32), dev)
    f = ex["main"]
    f(*args, out)
    one = ex.mod.time_evaluator("main", dev, number=1, repeat=3)(*args, out).median
    number = max(1, int(min_ms / 1e3 / max(one, 1e-7)))
    ts = ex.mod.time_evaluator("main", dev, number=number, repeat=repeats)(*args, out).results
    t_shift = min(ts)
    # CPU time actually consumed (all threads, incl. TVM workers' spin-waits): terms per CPU-second is
    # what the kernel achieves while it runs, independent of how much of the shared machine it got
    import resource
    reps = max(1, int(0.3 / max(t_shift, 1e-7)))
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    for _ in range(reps):
        f(*args, out)
    w1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / reps
    wall_s = (w1 - w0) / reps
    t_torch, ref = torch_res
    err = float(np.max(np.abs(out.numpy() - ref)) / (np.max(np.abs(ref)) + 1e-30))
    return {"case": name, "shift_ms": t_shift * 1e3, "torch_ms": t_torch * 1e3, "ratio": t_shift / t_torch,
            "gterms_s": terms / t_shift / 1e9, "gterms_cpu_s": terms / max(cpu_s, 1e-12) / 1e9,
            "cpu_share": cpu_s / max(wall_s, 1e-12), "weight_MB": codes.nbytes / 1e6, "build_s": build_s,
            "rel_err_vs_torch": err}


def _torch_case(kind, spec, x, shift, sign, bias, threads, repeats, min_ms):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    wf = torch.from_numpy((sign * np.ldexp(1.0, shift)).astype(np.float32))
    xf = torch.from_numpy(x.astype(np.float32) / 32)
    bf = torch.from_numpy(bias)
    with torch.no_grad():
        if kind == "dense":
            fn = lambda: F.linear(xf, wf, bf)  # noqa: E731
            ref = F.linear(xf, wf, bf).numpy()
        else:
            fn = lambda: F.conv2d(xf, wf, bf, padding=1, groups=spec.groups)  # noqa: E731
            ref = F.conv2d(xf, wf, bf, padding=1, groups=spec.groups).numpy()
        t_torch = _median_torch(fn, repeats, min_ms)
    return t_torch, ref


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--min-ms", type=float, default=2.0)
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(a.threads)
    from schedules import resolve_target
    target = resolve_target(a.target)
    load0 = os.getloadavg()
    # torch first (all cases), then TVM: TVM's worker threads spin after each call and would steal the
    # cores from torch's OpenMP pool (measured: 10-100x slower torch when interleaved).
    tres = {c: bench_case(c, CASES[c], a.threads, a.repeats, a.min_ms, target, phase="torch") for c in a.cases}
    rows = [bench_case(c, CASES[c], a.threads, a.repeats, a.min_ms, target, torch_res=tres[c]) for c in a.cases]
    lines = [f"threads={a.threads} target={target} loadavg before={load0} after={os.getloadavg()}", "",
             "| case | shift ms (best) | torch f32 ms (best) | shift/torch | Gterm/s | Gterm per CPU-s | CPUs used | codes MB | rel err vs torch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['shift_ms']:.4f} | {r['torch_ms']:.4f} | {r['ratio']:.2f} | "
                     f"{r['gterms_s']:.2f} | {r['gterms_cpu_s']:.2f} | {r['cpu_share']:.2f} | {r['weight_MB']:.3f} | {r['rel_err_vs_torch']:.1e} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
