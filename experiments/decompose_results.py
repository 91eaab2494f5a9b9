#!/usr/bin/env python
"""Collect the CIFAR-10 ResNet-20 decomposition runs (``experiments/decompose_cifar10.sh``) into a markdown table.

For each run folder it reads ``train_log.csv``/``test_log.csv`` and reports the final and best top-1, the
epochs done, the total training wall time (per epoch: ``epoch_time_s`` when logged, else train + test time)
and the median epoch time with the original architecture and after the decomposition, with their ratio.

    python experiments/decompose_results.py --root /work/runs/models                 # print the table
    python experiments/decompose_results.py --root /work/runs/models --write RESULTS.md

``--write`` replaces the text between ``<!-- decompose-results:start -->`` and ``<!-- decompose-results:end -->``
in that file (appending the section, with its heading, when the markers are absent). Unfinished runs are listed
with the epochs they have; missing ones are skipped.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path
from typing import Sequence

START, END = "<!-- decompose-results:start -->", "<!-- decompose-results:end -->"

# (run folder under <root>/cifar10/resnet20, label); the names decompose_cifar10.sh uses with E=10, R=25
ARMS = [
    ("fp32_e30", "FP32 baseline"),
    ("fp32_e30_tucker_e10", "Tucker-2 (VBMF ranks) after 10"),
    ("fp32_e30_tucker50_e10", "Tucker-2 (half ranks) after 10"),
    ("fp32_e30_cp50_e10", "CP (rank ½·max(C, O)) after 10"),
    ("fp32_e30_tucker_e10_r25", "Tucker (VBMF) after 10, recomposed after 25"),
    ("shift_q_all_wb_5_e30_tucker50_e10", "Tucker (half ranks) after 10, then DeepShift-Q"),
    ("shift_q_all_wb_5_ft_fp32", "DeepShift-Q fine-tuned from FP32"),
    ("shift_ps_all_wb_5_ft_fp32", "DeepShift-PS fine-tuned from FP32"),
]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summarize(run: Path) -> dict | None:
    """The table row for one run folder (None if it has no logs)."""
    train, test = _rows(run / "train_log.csv"), _rows(run / "test_log.csv")
    if not train or not test:
        return None
    test_time = {r["epoch"]: float(r["time_s"] or 0) for r in test}
    before, after, total = [], [], 0.0
    for r in train:
        t = float(r["epoch_time_s"]) if r.get("epoch_time_s") else float(r["time_s"]) + test_time.get(r["epoch"], 0.0)
        total += t
        arch = r.get("arch") or "original"  # logs written before the arch column: the original model
        if arch == "original":
            before.append(t)
        elif arch == "decomposed":
            after.append(t)
    med_b = statistics.median(before) if before else None
    med_a = statistics.median(after) if after else None
    return {"epochs": len(train), "final": float(test[-1]["test_acc1"]), "best": max(float(r["test_acc1"]) for r in test),
            "total_h": total / 3600, "before_s": med_b, "after_s": med_a,
            "speedup": (med_b / med_a) if med_b and med_a else None}


def table(root: Path) -> str:
    lines = ["| run | epochs | final top-1 % | best top-1 % | train wall time (h) | s/epoch original | "
             "s/epoch decomposed | epoch speed-up |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    for folder, label in ARMS:
        s = summarize(root / "cifar10" / "resnet20" / folder)
        if s is None:
            continue
        lines.append(f"| {label} (`{folder}`) | {s['epochs']} | {s['final']:.2f} | {s['best']:.2f} | "
                     f"{s['total_h']:.2f} | {fmt(s['before_s'], '.0f')} | {fmt(s['after_s'], '.0f')} | "
                     f"{fmt(s['speedup'], '.2f')}× |".replace("–×", "–"))
    return "\n".join(lines) + "\n"


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.is_file() else ""
    block = f"{START}\n{body}{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## CIFAR-10 ResNet-20: training by tensor decomposition\n\n" + block + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/work/runs/models"), help="the runs' --out-dir")
    p.add_argument("--write", type=Path, default=None, help="markdown file whose marked section to replace")
    a = p.parse_args(argv)
    if not (a.root / "cifar10" / "resnet20").is_dir():
        print(f"error: no CIFAR-10 ResNet-20 runs under {a.root}", file=sys.stderr)
        return 2
    body = table(a.root)
    print(body, end="")
    if a.write is not None:
        write_section(a.write, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
