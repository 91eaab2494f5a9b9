"""Migration report: every DeepShift fixture (tests/fixtures/deepshift/, files written by the original code)
imported with no flags, compiled, verified, and compared with the original forward.

    python experiments/deepshift_import_report.py [--out deepshift_import.md] [--only NAME ...]

Per run: the import summary, shift ops bit-exact vs shiftcomp.reference, the compiled model's max abs difference
and argmax agreement against the original outputs (MNIST: log-probabilities, the original models end in
log_softmax), pass = bit-exact ops, difference <= 1e-4 and 100 % argmax agreement.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "shiftcomp"))

from deepshift_fixtures import CIFAR_RUNS, MNIST_RUNS, comparable, images, original, run_folder  # noqa: E402

import shiftcomp as sc  # noqa: E402
from shiftcomp.checkpoint import load_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--only", nargs="*", default=None, help="fixture names (default: all)")
    args = ap.parse_args(argv)
    names = args.only or (MNIST_RUNS + CIFAR_RUNS)
    rows = ["| DeepShift run | route | import (no flags) | shift ops bit-exact | max abs diff vs original | argmax | result |",
            "|---|---|---|---|---|---|---|"]
    ok_all = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            run = run_folder(name, Path(tmp))
            ck = load_checkpoint(run)
            x = images(name)
            compiled = sc.compile(ck.model, (x,))
            report = sc.verify(compiled, ck.model, (x,), probes=False)
            n_exact = sum(1 for o in report.ops if o.ok)
            y = comparable(name, compiled(x))
            want = original(name)
            diff = float((y - want).abs().max())
            agree = float((y.argmax(1) == want.argmax(1)).float().mean())
            ok = n_exact == len(report.ops) and diff <= 1e-4 and agree == 1.0
            ok_all &= ok
            short = ck.summary.split(": ", 1)[1].split(" (from")[0]
            rows.append(f"| {name} | `load_checkpoint(run dir)` -> `compile` -> `verify` | {short} | {n_exact}/{len(report.ops)} | "
                        f"{diff:.3g} | {agree:.0%} ({len(x)}) | {'pass' if ok else 'FAIL'} |")
            print(rows[-1], flush=True)
    text = "\n".join(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
