#!/usr/bin/env python
"""Sum-then-shift kernels vs today's shift kernels vs torch float32, per layer shape, in one process.

    python experiments/bench_sum_then_shift.py [--threads 1] [--rounds 15] [--out runs/bench_sum_then_shift]
    python experiments/bench_sum_then_shift.py --cases conv64@56 gemv4096
    python experiments/bench_sum_then_shift.py --k-tiles 1 2 4 8      # also: forced input-channel tiles
    python experiments/bench_sum_then_shift.py --other-layout         # also: the other conv layout order

For every shape, the candidates are timed *interleaved* (one call of each per round, in an order that rotates
every round, rounds repeated; the median of the rounds is reported), so the load of the shared machine and
the caches left by the previous call hit all of them alike:

* ``new``: ``schedules.sum_then_shift.build(...)`` kernel alone (activations already packed),
  ``new+pack``: the int32 pack pre-kernel (int32 NCHW -> int16 layout) plus the kernel,
  ``q+pack+new``: the quantise kernel (float32 -> int32 ``x_q``, ``passes.quantize_kernel``) + int32 pack +
  kernel, what a compiled layer ran before the quantising pack, and ``qpack+new``: the quantising pack
  (float32 -> int16 layout, ``SumThenShiftKernel.pack_float``) + kernel -- a compiled layer's cost from its
  float input, like torch's (the goal column compares this one);
* ``today``: ``schedules.build_shift_kernel`` (per-term variable shift), default schedule, no tuning;
* ``torch``: ``F.conv2d`` / ``F.linear`` in float32.

Times are medians of thread-CPU time (``*_ms``; the ratios use them) and of wall time (``*_wall_ms``, CSV).
The batch-1 default, ``schedules.table_gemv``, is timed against these at 1 and 2 threads by
``experiments/bench_gemv.py``.

Weights: He-normal floats rounded to powers of two (``shift = round(log2|w|)`` clipped to [-15, 0], i.e.
DeepShift Q with 5-bit codes), activations 8-bit Q(3,5), bias. Writes ``<out>.csv`` and ``<out>.md`` and
prints the CPU model, ISA (vector width the kernels use) and load average (before / after).
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # torch workers must not spin while TVM runs

import numpy as np  # noqa: E402

# name: (kind, C, O, H, W, K, stride, groups, goal: max ratio new+pack / torch, or min speedup for GEMV)
CASES = {
    "conv64@56": ("conv", 64, 64, 56, 56, 3, 1, 1, 0.8),
    # ResNet-20 (CIFAR, 32x32): every conv shape
    "r20 3->16@32": ("conv", 3, 16, 32, 32, 3, 1, 1, 0.5),
    "r20 16->16@32": ("conv", 16, 16, 32, 32, 3, 1, 1, 0.5),
    "r20 16->32/2@32": ("conv", 16, 32, 32, 32, 3, 2, 1, 0.5),
    "r20 32->32@16": ("conv", 32, 32, 16, 16, 3, 1, 1, 0.5),
    "r20 32->64/2@16": ("conv", 32, 64, 16, 16, 3, 2, 1, 0.5),
    "r20 64->64@8": ("conv", 64, 64, 8, 8, 3, 1, 1, 0.5),
    # ResNet-18 (CIFAR variant, 32x32): every conv shape
    "r18 3->64@32": ("conv", 3, 64, 32, 32, 3, 1, 1, 1.0),
    "r18 64->64@32": ("conv", 64, 64, 32, 32, 3, 1, 1, 1.0),
    "r18 64->128/2@32": ("conv", 64, 128, 32, 32, 3, 2, 1, 1.0),
    "r18 1x1 64->128/2@32": ("conv", 64, 128, 32, 32, 1, 2, 1, 1.0),
    "r18 128->128@16": ("conv", 128, 128, 16, 16, 3, 1, 1, 1.0),
    "r18 128->256/2@16": ("conv", 128, 256, 16, 16, 3, 2, 1, 1.0),
    "r18 1x1 128->256/2@16": ("conv", 128, 256, 16, 16, 1, 2, 1, 1.0),
    "r18 256->256@8": ("conv", 256, 256, 8, 8, 3, 1, 1, 1.0),
    "r18 256->512/2@8": ("conv", 256, 512, 8, 8, 3, 2, 1, 1.0),
    "r18 1x1 256->512/2@8": ("conv", 256, 512, 8, 8, 1, 2, 1, 1.0),
    "r18 512->512@4": ("conv", 512, 512, 4, 4, 3, 1, 1, 1.0),
    # ResNet-18 (ImageNet, 224x224): the 3x3 shapes of layers 2-4 (conv64@56 is layer 1's)
    "in 128->128@28": ("conv", 128, 128, 28, 28, 3, 1, 1, 1.0),
    "in 256->256@14": ("conv", 256, 256, 14, 14, 3, 1, 1, 1.0),
    "in 512->512@7": ("conv", 512, 512, 7, 7, 3, 1, 1, 1.0),
    # MobileNetV2 (224x224) depthwise 3x3 shapes
    "dw 96/2@112": ("conv", 96, 96, 112, 112, 3, 2, 96, 1.0),
    "dw 144@56": ("conv", 144, 144, 56, 56, 3, 1, 144, 1.0),
    "dw 192@28": ("conv", 192, 192, 28, 28, 3, 1, 192, 1.0),
    "dw 384@14": ("conv", 384, 384, 14, 14, 3, 1, 384, 1.0),
    "dw 960@7": ("conv", 960, 960, 7, 7, 3, 1, 960, 1.0),
    # dense
    "dense 64x512->512": ("dense", 512, 512, 64, 1, 1, 1, 1, 1.0),
    "gemv4096": ("dense", 4096, 4096, 1, 1, 1, 1, 1, 4.0),
}
F_BITS, ACT_BITS = 5, (3, 5)


def _weights(rng, shape, fan_in):
    w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    sign = np.sign(w).astype(np.int64)
    with np.errstate(divide="ignore"):
        shift = np.clip(np.round(np.log2(np.abs(w))), -15, 0).astype(np.int64)
    return shift, sign


def _interleaved(fns: dict, rounds: int) -> tuple[dict, dict]:
    """Median thread-CPU time and median wall time per candidate, in ms. With one thread everything runs in
    this thread (TVM's pool runs task 0 on the caller), so CPU time excludes the time the shared machine
    kept us descheduled; wall time is reported next to it."""
    for fn in fns.values():          # warm-up
        fn()
        fn()
    cpu = {k: [] for k in fns}
    wall = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        # the order rotates: a candidate that always ran right after torch's conv measured up to 2x slower
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[k]
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.thread_time() - c0)
    med = lambda d: {k: statistics.median(v) * 1e3 for k, v in d.items()}  # noqa: E731
    return med(cpu), med(wall)


def run_case(name: str, spec_t: tuple, rounds: int, target, k_tiles: tuple = (), other_layout: bool = False
             ) -> dict:
    import torch
    import torch.nn.functional as Fn
    import tvm

    from passes.accumulator import plan_accumulator
    from schedules import Conv2dSpec, DenseSpec, build_shift_kernel, conv2d_weight_codes, dense_weight_codes
    from schedules import sum_then_shift as sts
    from schedules.compute import weight_codes

    kind, C, O, H, W, K, stride, groups, goal = spec_t
    rng = np.random.default_rng(0)
    tens = lambda a: tvm.runtime.tensor(np.ascontiguousarray(a))  # noqa: E731
    bias = rng.normal(0, 0.1, size=O).astype(np.float32)
    a = 2 ** (sum(ACT_BITS) - 1)
    if kind == "conv":
        shift, sign = _weights(rng, (O, C // groups, K, K), C // groups * K * K)
        s0 = int(shift[sign != 0].min())
        acc = plan_accumulator(name, shift, sign, ACT_BITS, s0).dtype
        pad = K // 2
        spec = Conv2dSpec(1, C, H, W, O, K, K, stride=stride, padding=pad, groups=groups, frac_bits=F_BITS, s0=s0,
                          acc_dtype=acc, has_bias=True)
        x = rng.integers(-a, a, size=spec.x_shape)
        codes_today = conv2d_weight_codes(shift, sign, s0, groups)
        codes_new = weight_codes(shift, sign, s0)
        k = sts.build("conv2d", spec, codes_new, target, ACT_BITS)
        today = build_shift_kernel("conv2d", spec, target)
        xf = torch.tensor(x * 2.0 ** -F_BITS, dtype=torch.float32)
        wf = torch.tensor(sign * 2.0 ** shift, dtype=torch.float32)
        bt = torch.tensor(bias)
        torch_fn = lambda: Fn.conv2d(xf, wf, bt, stride, pad, 1, groups)  # noqa: E731
        n_terms = int((sign != 0).sum()) * spec.out_hw[0] * spec.out_hw[1]
    else:
        M = H
        shift, sign = _weights(rng, (O, C), C)
        s0 = int(shift[sign != 0].min())
        acc = plan_accumulator(name, shift, sign, ACT_BITS, s0).dtype
        spec = DenseSpec(M, C, O, frac_bits=F_BITS, s0=s0, acc_dtype=acc, has_bias=True)
        x = rng.integers(-a, a, size=(M, C))
        codes_today = dense_weight_codes(shift, sign, s0)
        codes_new = weight_codes(shift, sign, s0)
        k = sts.build("dense", spec, codes_new, target, ACT_BITS)
        today = build_shift_kernel("dense", spec, target)
        xf = torch.tensor(x * 2.0 ** -F_BITS, dtype=torch.float32)
        wf = torch.tensor(sign * 2.0 ** shift, dtype=torch.float32)
        bt = torch.tensor(bias)
        torch_fn = lambda: Fn.linear(xf, wf, bt)  # noqa: E731
        n_terms = int((sign != 0).sum()) * M
    c = k.compile()
    x_t, b_t = tens(x.astype(np.int32)), tens(bias)
    packed = tens(np.zeros(k.packed_shape, k.lane_dtype))
    w_t = [tens(w) for w in k.weight_inputs]
    out_new = tens(np.zeros(spec.out_shape, np.float32))
    f_pack, f_main = c.module["pack"], c.module["main"]
    today_mod = tvm.tirx.build(today.with_attr("global_symbol", "main"), target=k.target)
    out_today = tens(np.zeros(spec.out_shape, np.float32))
    codes_t = tens(codes_today)
    f_today = today_mod["main"]
    from passes.quantize_kernel import quantize_primfunc

    xf_t = tens((x * 2.0 ** -F_BITS).astype(np.float32))
    xq_t = tens(np.zeros(spec.x_shape, np.int32))
    f_quant = tvm.tirx.build(quantize_primfunc(spec.x_shape, *ACT_BITS, "nearest").with_attr("global_symbol", "q"),
                             target=k.target)["q"]
    f_qpack = tvm.tirx.build(k.pack_float("nearest").with_attr("global_symbol", "qpack"), target=k.target)["qpack"]
    fns = {
        "new": lambda: f_main(packed, *w_t, b_t, out_new),
        "new+pack": lambda: (f_pack(x_t, packed), f_main(packed, *w_t, b_t, out_new)),
        "q+pack+new": lambda: (f_quant(xf_t, xq_t), f_pack(xq_t, packed), f_main(packed, *w_t, b_t, out_new)),
        "qpack+new": lambda: (f_qpack(xf_t, packed), f_main(packed, *w_t, b_t, out_new)),
        "today": lambda: f_today(x_t, codes_t, b_t, out_today),
        "torch": torch_fn,
    }
    for kt in k_tiles:           # the same kernel with a forced number of input-channel tiles
        if k.kind == "depthwise":
            break
        kk = sts.build(k.kind, spec, codes_new, target, ACT_BITS, k_tiles=kt)
        f_kt, w_kt = kk.compile().module["main"], [tens(w) for w in kk.weight_inputs]
        fns[f"new_kt{kk.k_tiles}"] = (lambda f, w: lambda: f(packed, *w, b_t, out_new))(f_kt, w_kt)
    layouts_differ = k.kind == "conv2d" and sts.layout_orders_differ(spec, k.vector_lanes)
    out_other = None
    if other_layout and layouts_differ:   # the kernel with the other layout order (its own packed input)
        ko = sts.build("conv2d", spec, codes_new, target, ACT_BITS, taps=not k.taps)
        co = ko.compile().module
        packed_o = tens(np.zeros(ko.packed_shape, ko.lane_dtype))
        co["pack"](x_t, packed_o)
        w_o, out_other = [tens(w) for w in ko.weight_inputs], tens(np.zeros(spec.out_shape, np.float32))
        fns["new_other_layout"] = lambda: co["main"](packed_o, *w_o, b_t, out_other)
    with torch.no_grad():
        med, wall = _interleaved(fns, rounds)
    exact = bool(np.array_equal(out_new.numpy().view(np.int32), out_today.numpy().view(np.int32)))
    if out_other is not None:
        exact = exact and bool(np.array_equal(out_other.numpy().view(np.int32), out_today.numpy().view(np.int32)))
    row = {"case": name, "kernel": k.kind, "lanes": k.vector_lanes, "block": k.block, "k_tiles": k.k_tiles,
           "layout": ("taps" if k.taps else "halo") if layouts_differ else "one",
           "terms": n_terms,
           "segments": int(k.weight_inputs[1].shape[0]) if k.kind != "depthwise" else 0}
    row.update({f"{n}_ms": round(v, 4) for n, v in med.items()})
    row.update({f"{n}_wall_ms": round(v, 4) for n, v in wall.items()})
    row["new_vs_torch"] = round(med["new"] / med["torch"], 3)
    row["newpack_vs_torch"] = round(med["new+pack"] / med["torch"], 3)
    row["qpack_vs_torch"] = round(med["qpack+new"] / med["torch"], 3)
    row["today_vs_torch"] = round(med["today"] / med["torch"], 3)
    row["gterms_per_s"] = round(n_terms / (med["new"] * 1e-3) / 1e9, 2)
    if name.startswith("gemv"):
        best = min(med["qpack+new"], med["today"])
        row["goal"] = f">= {goal}x faster"
        row["holds"] = med["torch"] / best >= goal
        row["winner"] = "today (column block)" if med["today"] < med["qpack+new"] else "sum-then-shift"
    else:
        row["goal"] = f"<= {goal}"
        row["holds"] = med["qpack+new"] / med["torch"] <= goal
        row["winner"] = ""
    row["equal_to_today"] = exact
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--cases", nargs="*", default=None, help=f"subset of {list(CASES)}")
    p.add_argument("--out", default="runs/bench_sum_then_shift")
    p.add_argument("--mcpu", default=None,
                   help="build for this LLVM CPU instead of the host's (it must run here: e.g. haswell = AVX2 "
                        "code on an AVX-512 machine)")
    p.add_argument("--k-tiles", type=int, nargs="*", default=[],
                   help="also time the kernel with these numbers of input-channel tiles (columns new_ktN_ms)")
    p.add_argument("--other-layout", action="store_true",
                   help="also time convs whose rows can carry the halo with the other layout order (column "
                        "new_other_layout_ms; column layout names the default's)")
    args = p.parse_args(argv)
    from shiftcomp.bench import machine_info, set_threads

    if args.threads != 1:
        p.error("--threads must be 1: times are thread-CPU times of the calling thread")
    set_threads(args.threads)
    import tvm

    from schedules import resolve_target
    from schedules.sum_then_shift import vector_bits

    target = resolve_target("llvm" if args.mcpu is None else
                            {"kind": "llvm", "mcpu": args.mcpu, "num-cores": os.cpu_count() or 1})
    names = args.cases or list(CASES)
    bad = [n for n in names if n not in CASES]
    if bad:
        p.error(f"unknown case(s) {bad}; choose from {list(CASES)}")
    info = machine_info()
    isa = f"{target.attrs.get('mcpu')}, {vector_bits(target)}-bit vectors"
    load0 = os.getloadavg()
    print(f"CPU: {info.get('cpu_model')} | LLVM cpu {info.get('llvm_cpu')} | {isa} | threads {args.threads} | "
          f"load {load0[0]:.2f}", flush=True)
    rows = []
    try:
        from tqdm import tqdm
        it = tqdm(names, desc="cases")
    except ImportError:  # pragma: no cover
        it = names
    for n in it:
        rows.append(run_case(n, CASES[n], args.rounds, target, tuple(args.k_tiles), args.other_layout))
        r = rows[-1]
        print(f"{n}: new {r['new_ms']} ms, new+pack {r['new+pack_ms']} ms, q+pack+new {r['q+pack+new_ms']} ms, "
              f"qpack+new {r['qpack+new_ms']} ms, today {r['today_ms']} ms, torch {r['torch_ms']} ms -> "
              f"{r['qpack_vs_torch']}x torch", flush=True)
    load1 = os.getloadavg()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    kt_cols = list(dict.fromkeys(k for r in rows for k in r if k.startswith("new_kt") and not k.endswith("wall_ms")))
    other = ["new_other_layout_ms"] if any("new_other_layout_ms" in r for r in rows) else []
    cols = ["case", "kernel", "terms", "layout", "k_tiles", "new_ms", *kt_cols, *other, "new+pack_ms",
            "q+pack+new_ms", "qpack+new_ms", "today_ms", "torch_ms", "newpack_vs_torch", "qpack_vs_torch",
            "today_vs_torch", "gterms_per_s", "goal", "holds"]
    lines = [f"CPU: {info.get('cpu_model')} ({isa}); threads {args.threads}; {args.rounds} interleaved rounds, "
             f"median thread-CPU ms; load average {load0[0]:.2f} -> {load1[0]:.2f} on {os.cpu_count()} CPUs",
             "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    gem = [r for r in rows if r["winner"]]
    for r in gem:
        lines.append("")
        lines.append(f"{r['case']}: batch-1 winner = {r['winner']} (qpack+new {r['qpack+new_ms']} ms, "
                     f"today {r['today_ms']} ms, torch {r['torch_ms']} ms)")
    text = "\n".join(lines) + "\n"
    with open(args.out + ".md", "w") as f:
        f.write(text)
    print(text)
    print(f"load average after: {load1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
