#!/usr/bin/env python
"""Adder convolutions vs torch float32 conv vs shift conv (same shapes, one process), plus energy per inference.

    python experiments/bench_adder.py --out runs/bench_adder            # 1 thread, medians of interleaved rounds
    python experiments/bench_adder.py --strided --no-energy             # stride-2 / grouped shapes

Per shape (3x3, padding 1, batch 1; default: stride 1, the adder convs of ShiftAddNet ResNet-20 and a 56x56
ImageNet-style layer; ``--strided``: AdderNet ResNet-20's stride-2 downsampling convs, a grouped and a
depthwise conv; ``--shapes C[-O]@HW[sS][gG]`` for others):

* ``adder_psadbw``: the compiled adder kernel with 8-bit operands (``vpsadbw``; schedules/adder.py),
* ``adder_plain``: the plain sub/abs/add kernel on the same data,
* ``shift``: the compiled shift-conv kernel (5-bit weights, Q(3,5) activations) of the same shape,
* ``torch_conv_f32``: ``F.conv2d`` in float32 (PyTorch eager),
* ``torch_adder_train_fwd`` / ``torch_adder_conv_fwdbwd`` vs ``torch_conv_fwdbwd``: the PyTorch training path of
  ``Conv2dAdder`` (tap by tap, no unfold), forward and forward+backward at batch 8, against ``F.conv2d``'s
  (CIFAR shapes only).

Kernels are timed with TVM's ``time_evaluator``, PyTorch with ``perf_counter``; candidates are interleaved
round by round and the median over rounds is reported, with ratios to ``torch_conv_f32`` from the same run.
Energy per inference (45 nm table of ``shiftcomp.energy``: int32 add 0.1 pJ, fp32 mul 3.7 pJ, fp32 add 0.9 pJ)
comes from the multiplication audit of the compiled AdderNet/ShiftAddNet ResNet-20 (adder/shift kernels'
data path, epilogue and quantise prologues, adder layers counted on the plain kernel's scalar ops; the float
stem conv and classifier counted as float MACs) and is compared with the float ResNet-20's conv/linear
arithmetic.
Writes ``<out>/adder.csv`` and ``<out>/adder.md``; prints the CPU model and ISA.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = ["16@32", "32@16", "64@8", "64@56"]              # C@HW: C -> C, HxW, 3x3, stride 1, groups 1
#: ``--strided``: ResNet-20's downsampling convs (16->32 @32, 32->64 @16, stride 2), grouped and depthwise
STRIDED_SHAPES = ["16-32@32s2", "32-64@16s2", "64@16g4", "32@32s2g32"]


def cpu_info() -> str:
    """``lscpu`` model name and the vector ISA this benchmark can use."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
                 platform.processor() or "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    isa = "AVX-512BW" if "avx512bw" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {isa}, {os.cpu_count()} logical CPUs"


def _tvm_timer(prim, args, number):
    import tvm

    from schedules.target import resolve_target

    ex = tvm.compile(tvm.IRModule({"main": prim.with_attr("global_symbol", "main")}), target=resolve_target("llvm"))
    f = ex.mod.time_evaluator("main", tvm.cpu(), number=number, repeat=1)
    return lambda: f(*args).mean


def _torch_timer(fn, number):
    def run():
        t = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t) / number
    return run


def parse_shape(text: str) -> dict:
    """``C[-O]@HW[sS][gG]`` (3x3, padding 1) -> ``{"c", "o", "hw", "stride", "groups"}``."""
    m = re.fullmatch(r"(\d+)(?:-(\d+))?@(\d+)(?:s(\d+))?(?:g(\d+))?", text)
    if m is None:
        raise SystemExit(f"shape {text!r}: expected C[-O]@HW[sS][gG], e.g. 16-32@32s2 or 64@16g4")
    c, o, hw, st, g = m.groups()
    return {"c": int(c), "o": int(o or c), "hw": int(hw), "stride": int(st or 1), "groups": int(g or 1)}


def shape_label(sh: dict) -> str:
    extra = ((f" stride {sh['stride']}" if sh["stride"] > 1 else "")
             + (f" groups {sh['groups']}" if sh["groups"] > 1 else ""))
    return f"{sh['c']}->{sh['o']} 3x3 @{sh['hw']}x{sh['hw']}{extra}"


def layer_candidates(sh: dict, number: int):
    """``{name: timer}`` for one shape (all on the same random 8-bit data)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import tvm

    from schedules import build_shift_kernel
    from schedules.adder import AdderSpec, adder_conv2d_psadbw, adder_conv2d, psadbw_weights, schedule_x86
    from schedules.compute import Conv2dSpec, conv2d_weight_codes
    from shiftcomp.adder import adder_conv2d_train
    from shiftcomp.reference import adder_conv2d as ref

    c, o, hw, st, gr = sh["c"], sh["o"], sh["hw"], sh["stride"], sh["groups"]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (1, c, hw, hw), generator=g)
    w = torch.randint(-128, 128, (o, c // gr, 3, 3), generator=g)
    dev = tvm.cpu()
    spec = AdderSpec(1, c, hw, hw, o, 3, 3, stride=(st, st), padding=(1, 1, 1, 1), groups=gr, frac_bits=5,
                     x_bits=8, w_bits=8, w_dtype="int8")
    xt = tvm.runtime.tensor(x.numpy().astype("int32"), dev)
    bt = tvm.runtime.tensor(np.zeros(o, "float32"), dev)
    want = ref(x, w, 5, None, st, 1, 1, gr).out
    cands = {}
    for name, prim, wk in (("adder_psadbw", adder_conv2d_psadbw(spec), psadbw_weights(w.numpy())),
                           ("adder_plain", schedule_x86(adder_conv2d(spec), spec), w.numpy().astype("int8"))):
        out = tvm.runtime.tensor(np.zeros(spec.out_shape, "float32"), dev)
        args = (xt, tvm.runtime.tensor(wk, dev), bt, out)
        cands[name] = _tvm_timer(prim, args, number)
        cands[name]()
        if not torch.equal(torch.from_numpy(out.numpy()), want):
            raise SystemExit(f"{name} {shape_label(sh)}: result differs from the exact reference")
    shift = torch.randint(-15, 1, tuple(w.shape), generator=g).to(torch.int8)
    sign = (torch.randint(0, 2, tuple(w.shape), generator=g) * 2 - 1).to(torch.int8)
    s0 = int(shift.min())
    sspec = Conv2dSpec(1, c, hw, hw, o, 3, 3, st, 1, 1, gr, 5, s0, "int32", False)
    sprim = build_shift_kernel("conv2d", sspec, "llvm")
    codes = conv2d_weight_codes(shift.numpy(), sign.numpy(), s0, gr)
    sout = tvm.runtime.tensor(np.zeros(sspec.out_shape, "float32"), dev)
    cands["shift"] = _tvm_timer(sprim, (xt, tvm.runtime.tensor(codes, dev), sout), number)
    xf, wf = torch.randn(1, c, hw, hw), torch.randn(o, c // gr, 3, 3)
    cands["torch_conv_f32"] = _torch_timer(lambda: F.conv2d(xf, wf, stride=st, padding=1, groups=gr), number)
    if hw > 32 or st > 1 or gr > 1 or o != c:   # the training path is measured on the CIFAR stride-1 shapes only
        return cands
    # training path (batch 8, as a training step would see it)
    xb = torch.randn(8, c, hw, hw, requires_grad=True)
    wb = torch.randn(c, c, 3, 3, requires_grad=True)
    cands["torch_conv_fwd_b8"] = _torch_timer(lambda: F.conv2d(xb, wb, padding=1), max(1, number // 4))
    cands["torch_adder_train_fwd_b8"] = _torch_timer(lambda: adder_conv2d_train(xb, wb, 1, 1), max(1, number // 4))
    cands["torch_conv_fwdbwd_b8"] = _torch_timer(lambda: F.conv2d(xb, wb, padding=1).sum().backward(),
                                                 max(1, number // 4))
    cands["torch_adder_fwdbwd_b8"] = _torch_timer(lambda: adder_conv2d_train(xb, wb, 1, 1).sum().backward(),
                                                  max(1, number // 4))
    return cands


def energy_rows(batch: int = 1) -> list[dict]:
    """Energy per inference of float / AdderNet / ShiftAddNet ResNet-20 (see the module docstring)."""
    import torch

    import shiftcomp as sc
    from shiftcomp.energy import ENERGY_45NM_PJ, audit_shift_energy, estimate_energy
    from shiftcomp.models import resnet20
    from shiftcomp.models.resnet_adder import keep_stem_and_head

    x = torch.randn(batch, 3, 32, 32)
    base = resnet20().eval()
    float_pj = estimate_energy(base, x).float_pj
    head = base.conv1.weight.numel() * 32 * 32 * batch + base.fc.weight.numel() * batch   # stem + classifier MACs
    head_pj = head * (ENERGY_45NM_PJ["fp32_mul"] + ENERGY_45NM_PJ["fp32_add"])
    rows = [{"model": "resnet20 float32", "uJ_per_inference": float_pj * 1e-6, "vs_float": 1.0,
             "datapath_multiplies": "-", "counts": "conv/linear MACs x (fp32 mul + add)"}]
    configs = {
        "resnet20 AdderNet (Q(3,5) adders)": sc.AdderConfig(act_bits=(3, 5)),
        "resnet20 ShiftAddNet (PS 5-bit Q(4,4) shifts, Q(3,5) adders)": sc.ShiftAddConfig(
            shift=sc.ShiftConfig(mode="PS", weight_bits=5, act_bits=(4, 4)), adder=sc.AdderConfig(act_bits=(3, 5))),
    }
    # The audit weights every TIR op by its loop extents; a vpsadbw call covers 32-64 byte differences in one
    # op, so the energy is counted on the plain kernel's scalar terms (sub, 0 - d, max, add per term).
    saved = os.environ.get("SHIFTCOMP_ADDER_KERNEL")
    os.environ["SHIFTCOMP_ADDER_KERNEL"] = "plain"
    try:
        compiled_models = {}
        for name, cfg in configs.items():
            torch.manual_seed(0)
            model = sc.convert(resnet20(), cfg, filter_fn=keep_stem_and_head).eval()
            compiled_models[name] = sc.compile(model, x)
    finally:
        if saved is None:
            os.environ.pop("SHIFTCOMP_ADDER_KERNEL", None)
        else:
            os.environ["SHIFTCOMP_ADDER_KERNEL"] = saved
    for name, compiled in compiled_models.items():
        counts, pj = audit_shift_energy(compiled.audit)
        total = pj + head_pj
        rows.append({"model": name, "uJ_per_inference": total * 1e-6, "vs_float": float_pj / total,
                     "datapath_multiplies": compiled.audit.datapath_multiplies,
                     "counts": ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_adder")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median reported)")
    ap.add_argument("--number", type=int, default=10, help="calls per timing")
    ap.add_argument("--shapes", nargs="*", default=None,
                    help="C[-O]@HW[sS][gG] entries, e.g. 16@32 16-32@32s2 64@16g4 (default: SHAPES)")
    ap.add_argument("--strided", action="store_true", help="the STRIDED_SHAPES (stride 2, groups) instead")
    ap.add_argument("--no-energy", action="store_true")
    ap.add_argument("--no-layers", action="store_true", help="energy table only")
    a = ap.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    shapes = [parse_shape(s) for s in (a.shapes or (STRIDED_SHAPES if a.strided else SHAPES))]
    cpu = cpu_info()
    print(f"CPU: {cpu}; 1 thread; load {os.getloadavg()}")
    rows = []
    for sh in ([] if a.no_layers else shapes):
        cands = layer_candidates(sh, a.number)
        times = {k: [] for k in cands}
        for _ in range(a.rounds):
            for k, f in cands.items():
                times[k].append(f())
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            base = med["torch_conv_fwd_b8"] if k.endswith("_b8") and "fwdbwd" not in k else \
                med["torch_conv_fwdbwd_b8"] if "fwdbwd" in k else med["torch_conv_f32"]
            ohw = (sh["hw"] - 1) // sh["stride"] + 1
            terms = sh["o"] * sh["c"] // sh["groups"] * 9 * ohw * ohw
            rows.append({"shape": shape_label(sh), "candidate": k, "ms": v * 1e3, "vs_torch": v / base,
                         "terms_per_s": (terms * (8 if k.endswith("_b8") else 1)) / v})
        print(f"{shape_label(sh)}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in med.items()), flush=True)
    erows = [] if a.no_energy else energy_rows()
    os.makedirs(a.out, exist_ok=True)
    if rows:
        with open(os.path.join(a.out, "adder.csv"), "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    md = [f"CPU: {cpu}. 1 thread, median of {a.rounds} interleaved rounds; load {os.getloadavg()}.", ""]
    if rows:
        md += ["| shape | candidate | ms | vs torch (same batch, same pass) | Gterms/s |", "|---|---|---|---|---|"]
    md += [f"| {r['shape']} | {r['candidate']} | {r['ms']:.3f} | {r['vs_torch']:.2f} | {r['terms_per_s'] / 1e9:.2f} |"
           for r in rows]
    if erows:
        md += ["", "| model (batch 1) | energy uJ/inference | float / this | data-path multiplies | audit op counts |",
               "|---|---|---|---|---|"]
        md += [f"| {r['model']} | {r['uJ_per_inference']:.2f} | {r['vs_float']:.1f}x | {r['datapath_multiplies']} "
               f"| {r['counts']} |" for r in erows]
    text = "\n".join(md) + "\n"
    with open(os.path.join(a.out, "adder.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
