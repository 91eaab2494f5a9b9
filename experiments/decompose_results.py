#!/usr/bin/env python
"""Collect the CIFAR-10 ResNet-20 decomposition runs (``experiments/decompose_cifar10.sh``) into a markdown table.

For each run folder it reads ``train_log.csv``/``test_log.csv`` and reports the final and best top-1, the
epochs done, the total training wall time (per epoch: ``epoch_time_s`` when logged, else train + test time)
and CPU time (``cpu_time_s``), and the median epoch time with the original architecture and after the
decomposition, with their ratio. On a shared machine the CPU-time ratio is the one to read: wall time
also counts the time the run waited for the CPU.

    python experiments/decompose_results.py --root /work/runs/models                 # print the table
    python experiments/decompose_results.py --root /work/runs/models --write RESULTS.md
    python experiments/decompose_results.py --epochs 30 --decompose-epoch 10 --recompose-epoch 25   # other budget

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

def arms(epochs: int, e: int, r: int) -> list[tuple[str, str]]:
    """(run folder under <root>/cifar10/resnet20, label) of each arm, as decompose_cifar10.sh names them."""
    b = f"e{epochs}"
    return [
        (f"fp32_{b}", "FP32 baseline"),
        (f"fp32_{b}_tucker50_e{e}", f"Tucker-2 (half ranks) after {e}"),
        (f"fp32_{b}_cp50_e{e}", f"CP (rank ½·max(C, O)) after {e}"),
        (f"fp32_{b}_tucker_e{e}", f"Tucker-2 (VBMF ranks) after {e}"),
        (f"fp32_{b}_tucker50_e{e}_r{r}", f"Tucker-2 (half ranks) after {e}, recomposed after {r}"),
        (f"shift_q_all_wb_5_{b}_tucker50_e{e}", f"Tucker-2 (half ranks) after {e}, then DeepShift-Q"),
        (f"shift_q_all_wb_5_ft_fp32_{b}", "DeepShift-Q fine-tuned from the FP32 baseline"),
        (f"shift_ps_all_wb_5_ft_fp32_{b}", "DeepShift-PS fine-tuned from the FP32 baseline"),
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
    wall = {"original": [], "decomposed": []}
    cpu = {"original": [], "decomposed": []}
    total = total_cpu = 0.0
    for r in train:
        t = float(r["epoch_time_s"]) if r.get("epoch_time_s") else float(r["time_s"]) + test_time.get(r["epoch"], 0.0)
        c = float(r["cpu_time_s"]) if r.get("cpu_time_s") else None  # logs written before the column: none
        total += t
        total_cpu = total_cpu + c if c is not None and total_cpu is not None else None
        arch = r.get("arch") or "original"  # logs written before the arch column: the original model
        if arch in wall:
            wall[arch].append(t)
            if c is not None:
                cpu[arch].append(c)
    med = {k: statistics.median(v) if v else None for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) if v else None for k, v in cpu.items()}
    ratio = lambda m: (m["original"] / m["decomposed"]) if m["original"] and m["decomposed"] else None  # noqa: E731
    return {"epochs": len(train), "final": float(test[-1]["test_acc1"]), "best": max(float(r["test_acc1"]) for r in test),
            "total_h": total / 3600, "before_s": med["original"], "after_s": med["decomposed"], "speedup": ratio(med),
            "total_cpu_h": None if total_cpu is None else total_cpu / 3600, "before_cpu_s": med_cpu["original"],
            "after_cpu_s": med_cpu["decomposed"], "cpu_speedup": ratio(med_cpu)}


def table(root: Path, epochs: int = 6, e: int = 2, r: int = 4) -> str:
    """The markdown table of the arms found under ``root`` (see :func:`arms`)."""
    lines = ["| run | epochs | final top-1 % | best top-1 % | wall (h) | CPU (h) | s/epoch original (wall / CPU) | "
             "s/epoch decomposed (wall / CPU) | epoch speed-up (wall / CPU) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    for folder, label in arms(epochs, e, r):
        s = summarize(root / "cifar10" / "resnet20" / folder)
        if s is None:
            continue
        lines.append(f"| {label} (`{folder}`) | {s['epochs']} | {s['final']:.2f} | {s['best']:.2f} | "
                     f"{s['total_h']:.2f} | {fmt(s['total_cpu_h'], '.2f')} | "
                     f"{fmt(s['before_s'], '.0f')} / {fmt(s['before_cpu_s'], '.0f')} | "
                     f"{fmt(s['after_s'], '.0f')} / {fmt(s['after_cpu_s'], '.0f')} | "
                     f"{fmt(s['speedup'], '.2f')} / {fmt(s['cpu_speedup'], '.2f')} |")
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
    p.add_argument("--epochs", type=int, default=6, help="the study's epoch budget (run names), default 6")
    p.add_argument("--decompose-epoch", dest="e", type=int, default=2, help="E of the arms, default 2")
    p.add_argument("--recompose-epoch", dest="r", type=int, default=4, help="R of the recompose arm, default 4")
    a = p.parse_args(argv)
    if not (a.root / "cifar10" / "resnet20").is_dir():
        print(f"error: no CIFAR-10 ResNet-20 runs under {a.root}", file=sys.stderr)
        return 2
    body = table(a.root, a.epochs, a.e, a.r)
    print(body, end="")
    if a.write is not None:
        write_section(a.write, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
