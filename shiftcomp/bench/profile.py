"""Per-kernel profiles of a build and the weight-size facts of a model."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax, tirx

from schedules.target import resolve_target
from shiftcomp.baseline import import_float
from shiftcomp.compiler import compile_stage
from shiftcomp.nn import is_shift_layer
from shiftcomp.tune.records import apply_database

__all__ = ["weight_bytes", "shift_peak_terms_per_s", "cpu_ghz", "profile_module", "profile_model", "tvm_op"]


def weight_bytes(model: nn.Module, bits: int) -> dict[str, int]:
    """Weight storage of a shift model: ``packed`` (conv/linear weights at ``bits`` bits each, per-layer
    byte-rounded, + float32 biases and other float params such as BatchNorm) vs ``float32`` (all params
    at 4 bytes). Bytes."""
    packed = f32 = 0
    seen: set[int] = set()
    for m in model.modules():
        if is_shift_layer(m):
            shift, _ = m.integer_weights()
            n = int(shift.numel())
            packed += (n * bits + 7) // 8
            f32 += 4 * n
            b = m.bias
            if b is not None:
                packed += 4 * b.numel()
                f32 += 4 * b.numel()
            for p in m.parameters(recurse=False):
                seen.add(id(p))
    for p in model.parameters():
        if id(p) not in seen:
            packed += 4 * p.numel()
            f32 += 4 * p.numel()
    for name, buf in model.named_buffers():
        if "running" in name:
            packed += 4 * buf.numel()
            f32 += 4 * buf.numel()
    return {"packed": packed, "float32": f32}


# ------------------------------------------------------------------------------------------------
# per-kernel profile (where the time goes)
# ------------------------------------------------------------------------------------------------
#: AVX-512 variable shift peak used for "fraction of peak": VPSLLVD zmm issues on port 0 only, one per
#: cycle (uops.info / Agner Fog instruction tables, Ice Lake-SP .. Sapphire/Emerald Rapids), 16 int32 lanes;
#: every term also needs a vector add on p0/p5, so 16 terms/cycle/core is the shift-add ceiling.
VPSLLVD_PER_CYCLE: float = 1.0
INT32_LANES_ZMM: int = 16


def shift_peak_terms_per_s(cores: int, ghz: float) -> float:
    """Shift-add ceiling in terms per second: cores x 1 VPSLLVD/cycle x 16 lanes x clock (GHz)."""
    return cores * VPSLLVD_PER_CYCLE * INT32_LANES_ZMM * ghz * 1e9


def cpu_ghz() -> float:
    """Nominal clock from /proc/cpuinfo (``cpu MHz``; under KVM the TSC rate), in GHz."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1e3
    except OSError:
        pass
    return float("nan")


def _random_args(prim: Any, dev: Any, seed: int = 0) -> list[Any]:

    rng = np.random.default_rng(seed)
    args = []
    for p in prim.params:
        ty = p.ty
        shape = tuple(int(d) for d in ty.shape)
        dt = str(ty.dtype)
        if dt == "int8":
            a = rng.integers(-4, 5, shape).astype(dt)           # valid weight codes (small shifts)
        elif dt.startswith("int"):
            a = rng.integers(-64, 64, shape).astype(dt)
        else:
            a = rng.standard_normal(shape).astype(dt)
        args.append(tvm.runtime.tensor(a, dev))
    return args


def _call_counts(mod: Any) -> dict[str, int]:
    """How often ``main`` calls each PrimFunc (``call_tir``), by GlobalVar name."""

    counts: dict[str, int] = {}

    def visit(e: Any) -> None:
        if isinstance(e, relax.Call) and e.op == tvm_op("relax.call_tir"):
            gv = e.args[0]
            counts[gv.name_hint] = counts.get(gv.name_hint, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


def tvm_op(name: str) -> Any:

    return tvm.ir.Op.get(name)


def profile_module(mod: Any, target: Any = "llvm", repeat: int = 5, min_repeat_ms: float = 20.0,
                   macs: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Time every PrimFunc called by ``main`` standalone (random inputs, ``time_evaluator`` median).

    Returns rows ``{kernel, calls, ms_each, ms_total, share, scheduled, role}`` sorted by total time;
    ``share`` is of the sum over kernels (VM overhead excluded). ``macs``: optional per-kernel terms for
    a ``gops`` column.
    """
    tgt = resolve_target(target)
    dev = tvm.cpu()
    counts = _call_counts(mod)
    rows = []
    for gv, f in mod.functions_items():
        if not isinstance(f, tirx.PrimFunc) or gv.name_hint not in counts:
            continue
        prim = f.with_attr("global_symbol", "main")
        try:
            ex = tvm.compile(tvm.IRModule({"main": prim}), target=tgt)
            args = _random_args(prim, dev)
            res = ex.mod.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=int(min_repeat_ms))(*args)
            ms = float(res.median) * 1e3
        except Exception as e:  # pragma: no cover - reported, not fatal
            rows.append({"kernel": gv.name_hint, "calls": counts[gv.name_hint], "error": str(e)[:200]})
            continue
        attrs = f.attrs if f.attrs is not None else {}
        r = {"kernel": gv.name_hint, "calls": counts[gv.name_hint], "ms_each": ms,
             "ms_total": ms * counts[gv.name_hint], "scheduled": bool(attrs.get("tirx.is_scheduled", False)),
             "role": str(attrs.get("shiftcomp.role", "other"))}
        if macs and gv.name_hint in macs:
            r["gops"] = macs[gv.name_hint] / (ms * 1e-3) / 1e9
        rows.append(r)
    tot = sum(r.get("ms_total", 0.0) for r in rows) or 1.0
    for r in rows:
        if "ms_total" in r:
            r["share"] = r["ms_total"] / tot
    rows.sort(key=lambda r: -r.get("ms_total", 0.0))
    return rows


def profile_model(model: nn.Module, inputs: Sequence[torch.Tensor], target: Any = "llvm", tuned: Any = "auto",
                  side: str = "shift") -> list[dict[str, Any]]:
    """Per-kernel profile of a shift model as ``shiftcomp.compile`` builds it (``side="shift"``: the module
    after the pipeline's ``apply_database`` stage) or of its float twin (``side="float"``)."""
    tgt = resolve_target(target)
    if side == "float":
        return profile_module(apply_database(import_float(model, inputs), tgt, tuned), tgt)
    mod, state = compile_stage(model, inputs, tgt, "apply_database", tuned=tuned)
    macs = {}
    for low in state.report.layers.values():
        sp = low.spec
        if low.info.kind == "conv2d":
            oh, ow = sp.out_shape[2], sp.out_shape[3]
            m = sp.batch * sp.out_channels * oh * ow * (sp.in_channels // sp.groups) * sp.kernel_h * sp.kernel_w
        else:
            m = sp.batch * sp.in_features * sp.out_features
        macs[low.kernel] = int(m)
    return profile_module(mod, tgt, macs=macs)
