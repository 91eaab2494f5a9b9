"""Writing benchmark rows: CSV, markdown table, PNG chart."""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .backends import BACKENDS
from .suites import ROW_FIELDS
from .timing import machine_info

__all__ = ["write_csv", "read_csv", "to_markdown", "plot_rows", "write_outputs", "write_experiment_table"]


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows to CSV with the :data:`ROW_FIELDS` columns (extra keys appended)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fields = list(ROW_FIELDS) + sorted({k for r in rows for k in r} - set(ROW_FIELDS))
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_csv(r.get(k)) for k in fields})
    return p


def write_experiment_table(rows: Sequence[Mapping[str, Any]], stem: str | os.PathLike, header: str,
                           cols: Sequence[str] | None = None) -> str:
    """An experiment script's outputs: ``<stem>.csv`` (every key of the rows, in the first row's order) and
    ``<stem>.md`` (``header``, a blank line, then a markdown table of ``cols``, default every key). Returns the
    markdown text (the scripts print it)."""
    stem = str(stem)
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = list(cols or rows[0])
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    with open(stem + ".md", "w") as f:
        f.write(text)
    return text


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read rows written by :func:`write_csv` (numbers parsed back)."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.append({k: _parse(v) for k, v in r.items()})
    return out


def _fmt_csv(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _parse(v: str) -> Any:
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def _ms(v: Any) -> str:
    if v is None:
        return "—"
    v = float(v)
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _x(v: Any) -> str:
    return "—" if v is None else f"{float(v):.2f}×"


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown tables: one per suite, a line per case+batch, median ms per backend and the ratios

    ``shift/torch`` (latency ratio, < 1 = shift faster), ``shift/tvm-float`` and
    ``deepshift/shift`` (speed-up over the original DeepShift CPU kernel, measured constant).
    """
    out = io.StringIO()
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    for s in suites:
        srows = [r for r in rows if r["suite"] == s]
        backends = [b for b in (*BACKENDS, "deepshift-cpu*") if any(r["backend"] == b for r in srows)]
        keys = list(dict.fromkeys((r["case"], r["batch"]) for r in srows))
        out.write(f"\n### {s} suite (median latency, ms)\n\n")
        hdr = ["case", "batch"] + backends + ["shift/torch", "shift/tvm-float", "shift/torch.compile",
                                              "deepshift/shift", "shift GOP/s", "tuned"]
        out.write("| " + " | ".join(hdr) + " |\n")
        out.write("|" + "---|" * len(hdr) + "\n")
        for case, batch in keys:
            by = {r["backend"]: r for r in srows if r["case"] == case and r["batch"] == batch}
            med = {b: (by[b]["median_ms"] if b in by else None) for b in backends}
            sh = med.get("shiftcomp")

            def ratio(other: str) -> str:
                o = med.get(other)
                return _x(sh / o) if sh and o else "—"

            ds = med.get("deepshift-cpu*")
            cells = [case, str(batch)] + [_ms(med[b]) for b in backends] + [
                ratio("torch"), ratio("tvm-float"), ratio("torch.compile"),
                (f"{ds / sh:.0f}×" if ds and sh else "—"),
                (f"{by['shiftcomp']['gops']:.1f}" if "shiftcomp" in by and by["shiftcomp"].get("gops") else "—"),
                ("/".join(f"{b}:{'y' if by[b].get('tuned') is True else 'n'}" for b in ("shiftcomp", "tvm-float")
                          if b in by)),
            ]
            out.write("| " + " | ".join(cells) + " |\n")
        threads = sorted({r["threads"] for r in srows if r["backend"] != "deepshift-cpu*" and r["threads"]})
        out.write(f"\nThreads: {threads}. `deepshift-cpu*` = measured constant (BENCHMARKS.md) "
                  f"(original kernel, 1 thread), not re-run.\n")
    return out.getvalue()


def plot_rows(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path | None:
    """Grouped bar chart (log latency) per suite into one PNG. Returns None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    fig, axes = plt.subplots(len(suites), 1, figsize=(max(8, 0.9 * max(1, len(rows) // 3)), 4.5 * len(suites)),
                             squeeze=False)
    for ax, s in zip(axes[:, 0], suites):
        srows = [r for r in rows if r["suite"] == s and r["median_ms"]]
        keys = list(dict.fromkeys((r["case"], r["batch"]) for r in srows))
        backends = [b for b in (*BACKENDS, "deepshift-cpu*") if any(r["backend"] == b for r in srows)]
        width = 0.8 / max(1, len(backends))
        for i, b in enumerate(backends):
            vals = []
            for k in keys:
                v = [r["median_ms"] for r in srows if (r["case"], r["batch"]) == k and r["backend"] == b]
                vals.append(float(v[0]) if v else float("nan"))
            ax.bar([j + i * width for j in range(len(keys))], vals, width, label=b)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        ax.set_xticklabels([f"{c}\nb{bt}" for c, bt in keys], rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("median latency (ms, log)")
        ax.set_title(f"{s} suite")
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def write_outputs(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, stem: str = "bench",
                  meta: Mapping[str, Any] | None = None, plot: bool = True) -> dict[str, Path]:
    """Write ``<stem>.csv``, ``<stem>.md`` (tables + machine/meta header), ``<stem>.png``, ``<stem>.json``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"csv": write_csv(rows, d / f"{stem}.csv")}
    meta = dict(meta or {})
    meta.setdefault("date", _dt.datetime.now().isoformat(timespec="seconds"))
    meta.setdefault("machine", machine_info())
    md = [f"# {stem}\n", "```", json.dumps(meta, indent=1, default=str), "```", to_markdown(rows)]
    (d / f"{stem}.md").write_text("\n".join(md))
    paths["md"] = d / f"{stem}.md"
    (d / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=1, default=str))
    paths["json"] = d / f"{stem}.json"
    if plot:
        p = plot_rows(rows, d / f"{stem}.png")
        if p is not None:
            paths["png"] = p
    return paths


# ------------------------------------------------------------------------------------------------
# weight bytes
# ------------------------------------------------------------------------------------------------
