#!/usr/bin/env python
"""Compile a zoo model (random weights, DeepShift-Q 5-bit, Q(3,5) activations) and report: compile time, the
multiplication audit, the artifact's packed weight bytes vs float32, and the compiled output vs the PyTorch
model run through the exact integer reference.

    python experiments/compile_report.py resnet20 [--batch 1] [--seed 0] [--out /tmp/model.so]
"""
from __future__ import annotations

import argparse
import time

import torch

import shiftcomp as sc
from shiftcomp.models import INPUT_SHAPES, get_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo name, e.g. resnet20, mobilenetv2, simple_conv")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/compile_report.so", help="where the artifact is written")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    model = sc.convert(get_model(args.model), sc.ShiftConfig(mode="Q", weight_bits=5, act_bits=(3, 5))).eval()
    x = torch.randn(args.batch, *INPUT_SHAPES[args.model])
    t = time.perf_counter()
    compiled = sc.compile(model, (x,), target="llvm")
    print(f"compile {args.model} (no tuning): {time.perf_counter() - t:.1f} s")
    print(compiled.audit)
    info = compiled.export(args.out)
    print(f"artifact {args.out}: {info.file_bytes:,} B; shift weights packed {info.packed_weight_bytes:,} B vs "
          f"float32 {info.float32_weight_bytes:,} B ({info.float32_weight_bytes / info.packed_weight_bytes:.2f}x smaller)")
    with torch.no_grad(), sc.reference.exact(model):
        ref = model(x)
    y = compiled(x)
    print(f"compiled vs reference model: torch.equal={torch.equal(y, ref)}, max abs diff "
          f"{(y - ref).abs().max().item():.3g}, argmax equal {bool((y.argmax(1) == ref.argmax(1)).all())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
