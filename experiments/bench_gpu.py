#!/usr/bin/env python
"""ResNet-20 on an NVIDIA GPU: shiftcomp (CUDA) vs TVM-float (CUDA) vs torch CUDA float32, end to end and
per shift layer, all in one run.

    python experiments/bench_gpu.py --out runs/gpu --batches 1 64 [--db schedules/cuda-sm_90]

Model: ``get_model("resnet20")`` converted with Q, 5-bit weights, activations Q(3,5) (``bench.to_shift``).

* ``shiftcomp``: the shift model through ``shiftcomp.compile`` for ``target="cuda"`` (the local GPU's
  ``sm_XX``): its convs run the CUDA sum-then-shift kernels (``schedules.sum_then_shift_cuda``); kernels and
  glue from the database ``--db`` when it holds records for that target.
* ``shiftcomp-per-term``: the same with the per-term kernels only
  (``ManualKernels(PER_TERM_FAMILIES)``: one thread per output, a shift per term), untuned.
* ``tvm-float``: the same network with its power-of-two weights as float32 through the same pipeline
  (``lower=False``: no shift lowering), same database.
* ``torch``: end to end the unconverted float model, per layer the layer's float twin
  (``nn.Conv2d``/``nn.Linear`` with the same weight values), float32 on the GPU, ``torch.inference_mode``.

Timing: inputs already on the GPU, ``warmup`` calls, then ``repeats`` repeats of ``number`` calls (calibrated
so that a repeat lasts at least ``--min-repeat-ms``), each repeat ended by a device synchronisation;
medians and quartiles in milliseconds. Ratios are ``backend / torch`` and ``backend / tvm-float`` of the
same run. The shiftcomp output is checked against the PyTorch exact integer reference (max abs error).

Without a GPU (``torch.cuda`` or TVM's CUDA runtime missing) every build still runs (CUDA code generation
on the CPU), nothing is timed, and the table says so; the exit code is 0.
Writes ``<out>/gpu.csv``, ``<out>/gpu.md`` and prints the markdown.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: candidates per model or layer, in table order
BACKENDS = ("shiftcomp", "shiftcomp-per-term", "tvm-float", "torch")
FIELDS = ("suite", "case", "batch", "backend", "median_ms", "q1_ms", "q3_ms", "vs_torch", "vs_tvm_float",
          "build_s", "tuned", "max_abs_err_vs_ref", "note")


def gpu_ready() -> tuple[bool, str]:
    """Whether torch and TVM can both use a CUDA GPU here, and a line saying which."""
    import torch
    import tvm

    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    try:
        if not tvm.cuda(0).exist:
            return False, "TVM's CUDA runtime sees no device (tvm.cuda(0).exist is False)"
    except Exception as e:  # noqa: BLE001
        return False, f"TVM's CUDA runtime failed: {e}"
    return True, f"{torch.cuda.get_device_name(0)} (compute capability {tvm.cuda(0).compute_version})"


def time_gpu(fn: Callable[[], Any], sync: Callable[[], None], warmup: int, repeats: int,
             min_repeat_ms: float) -> tuple[float, float, float]:
    """(median, q1, q3) in ms per call; each repeat ends with ``sync()``."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    number = max(1, math.ceil(min_repeat_ms / 1e3 / one))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / number * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return statistics.median(times), q[0], q[2]


def _tvm_timer(compiled: Any, inputs: tuple[Any, ...]) -> tuple[Callable[[], Any], Callable[[], None]]:
    import tvm

    run = compiled.vm_runner(*inputs)
    dev = tvm.cuda(0)
    return run, dev.sync


def _shift_layer_cases(model: Any, x: Any) -> list[tuple[str, Any, tuple[int, ...]]]:
    """One (name, layer, input shape) per distinct shift-layer shape of ``model`` for input ``x``."""
    import torch

    from shiftcomp.nn import named_shift_layers

    seen: dict[tuple, tuple[str, Any, tuple[int, ...]]] = {}
    hooks = []
    for name, layer in named_shift_layers(model):
        def hook(mod: Any, args: Any, _name: str = name) -> None:
            shape = tuple(args[0].shape)
            key = (type(mod).__name__, shape, tuple(mod.weight_shape), getattr(mod, "stride", None),
                   getattr(mod, "padding", None), getattr(mod, "groups", None))
            seen.setdefault(key, (_name, mod, shape))
        hooks.append(layer.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return list(seen.values())


def _case_label(name: str, layer: Any, shape: tuple[int, ...]) -> str:
    if len(shape) == 4:
        o = layer.weight_shape[0]
        return f"{name} conv{shape[1]}->{o}@{shape[2]}x{shape[3]}/s{layer.stride[0]}"
    return f"{name} linear{shape[1]}->{layer.weight_shape[0]}"


def bench_case(suite: str, case: str, batch: int, shift_model: Any, torch_model: Any, x: Any, db: Any,
               target: Any, timed: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build (and when ``timed``, time) the :data:`BACKENDS` for one model or layer."""
    import torch

    import shiftcomp as sc

    rows = []
    ref = None
    with torch.no_grad(), sc.reference.exact(shift_model):
        ref = shift_model(x)
    from passes.kernels import PER_TERM_FAMILIES, ManualKernels

    for backend in BACKENDS:
        row: dict[str, Any] = {k: "" for k in FIELDS}
        row.update(suite=suite, case=case, batch=batch, backend=backend)
        try:
            t0 = time.perf_counter()
            if backend == "torch":
                m = torch_model.cuda().eval() if timed else torch_model
                xd = x.cuda() if timed else x
                fn = lambda m=m, xd=xd: m(xd)  # noqa: E731
                sync = torch.cuda.synchronize if timed else (lambda: None)
                row["build_s"] = 0.0
            else:
                per_term = backend == "shiftcomp-per-term"
                compiled = sc.compile(shift_model, (x,), target=target, tuned=db if db and not per_term else None,
                                      lower=backend != "tvm-float",
                                      kernels=ManualKernels(PER_TERM_FAMILIES) if per_term else None)
                row["build_s"] = round(time.perf_counter() - t0, 2)
                row["tuned"] = bool(getattr(compiled, "tuned_kernels", []))
                if timed:
                    fn, sync = _tvm_timer(compiled, (x,))
                    if backend != "tvm-float":
                        out = compiled(x)
                        out = out[0] if isinstance(out, tuple) else out
                        row["max_abs_err_vs_ref"] = f"{float((out.float() - ref).abs().max()):.3g}"
            if timed:
                with torch.inference_mode():
                    med, q1, q3 = time_gpu(fn, sync, args.warmup, args.repeats, args.min_repeat_ms)
                row.update(median_ms=round(med, 4), q1_ms=round(q1, 4), q3_ms=round(q3, 4))
            else:
                row["note"] = "built, not timed (no GPU)"
        except Exception as e:  # noqa: BLE001 - one failing backend must not hide the others
            row["note"] = f"ERROR {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        rows.append(row)
    by = {r["backend"]: r["median_ms"] for r in rows}
    for r in rows:
        if isinstance(r["median_ms"], float):
            if isinstance(by.get("torch"), float):
                r["vs_torch"] = round(r["median_ms"] / by["torch"], 3)
            if isinstance(by.get("tvm-float"), float):
                r["vs_tvm_float"] = round(r["median_ms"] / by["tvm-float"], 3)
    return rows


def to_markdown(rows: list[dict[str, Any]], header: list[str]) -> str:
    lines = header + ["", "| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(str(r[k]) for k in FIELDS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/gpu", help="output folder (gpu.csv, gpu.md)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--db", default=None, help="MetaSchedule database folder (default: none, untuned)")
    ap.add_argument("--no-layers", action="store_true", help="end to end only")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--min-repeat-ms", type=float, default=20.0)
    args = ap.parse_args(argv)

    import torch

    from shiftcomp import bench
    from shiftcomp.compiler import resolve_target
    from shiftcomp.models import INPUT_SHAPES, get_model
    from shiftcomp.baseline import float_twin

    timed, gpu_line = gpu_ready()
    target = resolve_target("cuda")
    info = bench.machine_info()
    header = [
        "# ResNet-20 (Q, 5-bit weights, Q(3,5) activations) on CUDA: shiftcomp vs TVM-float vs torch f32",
        "",
        f"- GPU: {gpu_line}" + ("" if timed else "  **-> no GPU: everything built, nothing timed**"),
        f"- TVM target: {target}",
        f"- CPU: {info.get('cpu_model', platform.processor())}, {info.get('cpus')} logical CPUs; "
        f"python {info['python']}, torch {info['torch']}, tvm {info.get('tvm')}",
        f"- database: {args.db or 'none (default schedules)'}; command: `python experiments/bench_gpu.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`",
    ]
    print("\n".join(header), flush=True)
    cfg = bench.default_shift_config(5, (3, 5))
    torch.manual_seed(0)
    fm = get_model("resnet20").eval()
    sm = bench.to_shift(fm, cfg).eval()
    rows: list[dict[str, Any]] = []
    batches = args.batches if timed else args.batches[:1]
    for b in batches:
        x = torch.randn(b, *INPUT_SHAPES["resnet20"], generator=torch.Generator().manual_seed(b))
        rows += bench_case("model", "resnet20", b, sm, fm, x, args.db, target, timed, args)
        print(f"resnet20 batch {b}: " + ", ".join(f"{r['backend']}={r['median_ms'] or r['note']}"
                                                   for r in rows[-len(BACKENDS):]), flush=True)
        if args.no_layers:
            continue
        for name, layer, shape in _shift_layer_cases(sm, x):
            wrapped = torch.nn.Sequential(layer).eval()
            twin = float_twin(wrapped)
            xl = torch.randn(*shape, generator=torch.Generator().manual_seed(7)).clamp(-4, 3.9)
            rows += bench_case("layer", _case_label(name, layer, shape), b, wrapped, twin, xl, args.db,
                               target, timed, args)
            print(f"  {rows[-1]['case']}: " + ", ".join(f"{r['backend']}={r['median_ms'] or r['note']}"
                                                        for r in rows[-len(BACKENDS):]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    md = to_markdown(rows, header)
    with open(os.path.join(args.out, "gpu.md"), "w") as f:
        f.write(md)
    print("\n" + md)
    errors = [r for r in rows if str(r["note"]).startswith("ERROR")]
    print(f"wrote {args.out}/gpu.csv and gpu.md ({len(rows)} rows, {len(errors)} errors)")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
