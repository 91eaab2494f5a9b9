#!/usr/bin/env python
"""End-to-end benchmark of zoo models: shiftcomp vs TVM float vs PyTorch eager vs torch.compile,
plus the arithmetic-energy estimate (45 nm table) and weight bytes.

    python experiments/bench_models.py --out runs/bench --models resnet20 --batches 1 64

Writes <out>/models.{csv,md,png,json} and <out>/energy.{csv,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def energy_rows(models: list[str], cfg, batch: int = 1) -> list[dict]:
    import torch
    from shiftcomp import bench
    from shiftcomp.energy import estimate_energy
    from shiftcomp.models import INPUT_SHAPES, get_model

    out = []
    for name in models:
        torch.manual_seed(0)
        fm = get_model(name).eval()
        sm = bench.to_shift(fm, cfg)
        x = torch.randn(batch, *INPUT_SHAPES[name])
        rep = estimate_energy(sm, (x,), name)
        wb = bench.weight_bytes(sm, cfg.weight_bits)
        row = rep.row()
        try:  # cross-check with the compiled module's multiplication audit (passes/audit.py)
            from shiftcomp.compiler import compile as sc_compile
            from shiftcomp.energy import audit_shift_energy
            t0 = time.perf_counter()
            comp = sc_compile(sm, (x,), "llvm", tuned=None)
            row["compile_s_untuned"] = round(time.perf_counter() - t0, 2)
            counts, pj = audit_shift_energy(comp.audit)
            row["shift_uJ_audit"] = pj * 1e-6
            row["audit_shift_ops"] = counts["int32_shift"]
            row["audit_datapath_mul"] = int(comp.audit.datapath_multiplies)
            try:  # artifact weight bytes, as exported
                import tempfile
                with tempfile.TemporaryDirectory() as d:
                    info = comp.export(os.path.join(d, "m.so"))
                    row["artifact_weight_bytes"] = int(info.packed_weight_bytes)
                    row["artifact_f32_weight_bytes"] = int(info.float32_weight_bytes)
                    row["artifact_weight_ratio"] = info.float32_weight_bytes / max(1, info.packed_weight_bytes)
                    row["artifact_file_bytes"] = int(info.file_bytes)
            except Exception as e:  # noqa: BLE001
                row["artifact_error"] = str(e)[:120]
        except Exception as e:  # noqa: BLE001
            row["shift_uJ_audit"] = None
            row["audit_error"] = str(e)[:120]
        row.update(weight_bytes_packed=wb["packed"], weight_bytes_f32=wb["float32"],
                   f32_over_packed=wb["float32"] / wb["packed"])
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    from shiftcomp import bench

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(bench.DEFAULT_MODELS))
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 64])
    ap.add_argument("--backends", nargs="*", default=list(bench.BACKENDS), choices=list(bench.BACKENDS))
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--db", default=None)
    ap.add_argument("--untuned", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-repeat-ms", type=float, default=50.0)
    ap.add_argument("--weight-bits", type=int, default=5)
    ap.add_argument("--act-bits", type=int, nargs=2, default=[3, 5], metavar=("I", "F"))
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-energy", action="store_true")
    a = ap.parse_args(argv)

    cfg = bench.default_shift_config(a.weight_bits, tuple(a.act_bits))
    t0 = time.time()
    load0 = os.getloadavg()
    rows = bench.run_model_bench(a.models, a.batches, a.backends, a.target, None if a.untuned else (a.db or "auto"),
                                 a.threads, a.warmup, a.repeats, a.min_repeat_ms, cfg)
    meta = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
            "loadavg_before": load0, "loadavg_after": os.getloadavg(), "wall_s": round(time.time() - t0, 1),
            "shift_config": {"weight_bits": a.weight_bits, "act_bits": a.act_bits, "mode": "Q"},
            "errors": rows.errors}
    paths = bench.write_outputs(rows, a.out, "models", meta, plot=not a.no_plot)
    print(bench.to_markdown(rows))
    if not a.no_energy:
        import csv
        er = energy_rows(a.models, cfg)
        with open(os.path.join(a.out, "energy.csv"), "w", newline="") as f:
            fields = list(dict.fromkeys(k for r in er for k in r))
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(er)
        lines = ["| model | batch | MACs | shift µJ (analytic) | shift µJ (audit) | float µJ | float/shift (analytic) | "
                 "float/shift (audit) | data-path muls | params packed B (all) | params f32 B (all) | f32/packed (all) | "
                 "artifact shift-weight B | f32/artifact | compile s (untuned) |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in er:
            au = r.get("shift_uJ_audit")
            ratio_audit = f"{r['float_uJ'] / au:.1f}×" if au else "—"
            lines.append(f"| {r['model']} | {r['batch']} | {r['macs']:,} | {r['shift_uJ']:.2f} | "
                         f"{(f'{au:.2f}' if au else '—')} | {r['float_uJ']:.2f} | {r['float_over_shift']:.1f}× | "
                         f"{ratio_audit} | "
                         f"{r.get('audit_datapath_mul', '—')} | {r['weight_bytes_packed']:,} | {r['weight_bytes_f32']:,} | "
                         f"{r['f32_over_packed']:.2f}× | {r.get('artifact_weight_bytes', '—')} | "
                         f"{(format(r['artifact_weight_ratio'], '.2f') + '×') if r.get('artifact_weight_ratio') else '—'} | "
                         f"{r.get('compile_s_untuned', '—')} |")
        md = "\n".join(lines)
        with open(os.path.join(a.out, "energy.md"), "w") as f:
            f.write(md + "\n")
        print(md)
    print({k: str(v) for k, v in paths.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
