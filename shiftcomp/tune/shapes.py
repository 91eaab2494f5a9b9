"""Tune the shapes of a model's sum-then-shift kernels (:mod:`schedules.shape_choices`).

For every distinct layer shape (:func:`~schedules.shape_choices.choice_key`) the real layer's kernel is built
with a few candidate shapes -- lanes per vector, vectors per pixel block, input-channel tiles, and for convs
whose rows can carry the halo both packed layouts (aligned tap copies or halo first) -- and timed on
this machine with TVM's time evaluator (the thread pool ``compile``'d models use). The fastest is kept when it
beats the default shape by :data:`MIN_GAIN`; the result goes into ``<work_dir>/sum_then_shift.json``, which
``shiftcomp.compile(tuned=...)`` applies. Every shape computes the same bits, so tuning changes speed only.
"""
from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tqdm import tqdm

from passes.lowering import LoweredLayer
from schedules import sum_then_shift as stst
from schedules.shape_choices import ShapeChoice, choice_key, save_choices
from shiftcomp.compiler import compile_stage

__all__ = ["ShapeResult", "tune_shapes", "shape_requests", "candidates", "MIN_GAIN"]

log = logging.getLogger("shiftcomp.tune")

#: a candidate replaces the default shape only when it is at least this much faster (timing noise)
MIN_GAIN = 0.03


@dataclasses.dataclass
class ShapeResult:
    """One layer shape's measurement: the default and the chosen shape, their median ms per call."""

    key: str
    default: ShapeChoice
    chosen: ShapeChoice
    default_ms: float
    chosen_ms: float
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "default": dataclasses.asdict(self.default),
                "chosen": dataclasses.asdict(self.chosen), "default_ms": self.default_ms,
                "chosen_ms": self.chosen_ms, "candidates": self.candidates}


#: task-name prefixes of the layers built with a sum-then-shift conv / batched dense kernel (depthwise layers
#: have no shape to choose; a layer whose bound the kernel refused has another task name)
_TUNABLE = ("sum_then_shift_conv2d_", "sum_then_shift_dense_")


def shape_requests(model: Any, example_inputs: Sequence[Any], target: tvm.target.Target
                   ) -> dict[str, LoweredLayer]:
    """``{shape key: the first such layer}`` of the model's layers that compile builds with a sum-then-shift
    conv / batched dense kernel (from the lowering report of the same pipeline)."""
    _, state = compile_stage(model, example_inputs, target, "lower_shift", tuned=None)
    out: dict[str, LoweredLayer] = {}
    for low in state.report.layers.values():
        if low.task_name.startswith(_TUNABLE):
            key = choice_key(low.info.kind, low.spec, stst.segment_lane_dtype(tuple(low.info.act_bits)))
            out.setdefault(key, low)
    return out


def _shape_of(k: stst.SumThenShiftKernel) -> ShapeChoice:
    return ShapeChoice(k.vector_lanes, k.block // k.vector_lanes, k.k_tiles, bool(k.taps))


def _layouts_differ(low: LoweredLayer, lanes: int) -> bool:
    """Whether the conv's two layout orders give different layouts at ``lanes`` (rows that can carry the
    halo); otherwise trying the other order would time the same kernel again."""
    return low.info.kind == "conv2d" and stst.layout_orders_differ(low.spec, lanes)


def candidates(default: ShapeChoice, n_in: int, other_layout: bool = False) -> list[ShapeChoice]:
    """The shapes tried for a layer: the default first, then half the lanes, 2 or 4 block vectors, and
    1, 2, 4 or the default's input-channel tiles (at most one tile per 16 input channels); with
    ``other_layout``, also the default's lanes and block vectors with the other layout order at each of
    those tiles."""
    lanes = dict.fromkeys([default.lanes] + ([default.lanes // 2] if default.lanes >= 16 else []))
    vectors = dict.fromkeys([default.block_vectors, stst.BLOCK_VECTORS, 2])
    tiles = dict.fromkeys(t for t in (default.k_tiles, 1, 2, 4) if t == default.k_tiles or t <= max(1, n_in // 16))
    out = [default]
    for ln in lanes:
        for nv in vectors:
            for kt in tiles:
                c = ShapeChoice(ln, nv, kt, default.taps)
                if c not in out:
                    out.append(c)
    if other_layout:
        for kt in tiles:
            c = ShapeChoice(default.lanes, default.block_vectors, kt, not default.taps)
            if c not in out:
                out.append(c)
    return out


def _time_ms(k: stst.SumThenShiftKernel, rng: np.random.Generator, repeat: int) -> float:
    """Median ms of the kernel's ``main`` on random activations within the format's bound."""
    mod = k.compile().module
    bound = 2 ** (sum(k.act_bits) - 1)
    dev = tvm.cpu()
    packed = tvm.runtime.tensor(rng.integers(-bound, bound, size=k.packed_shape).astype(k.lane_dtype), dev)
    args = [packed] + [tvm.runtime.tensor(w, dev) for w in k.weight_inputs]
    if k.spec.has_bias:
        args.append(tvm.runtime.tensor(np.zeros(k.spec.out_features if k.kind == "dense" else k.spec.out_channels,
                                                np.float32), dev))
    args.append(tvm.runtime.tensor(np.zeros(tuple(int(d) for d in k.spec.out_shape), np.float32), dev))
    timer = mod.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=20)
    return float(statistics.median(timer(*args).results)) * 1e3


def tune_shapes(model: Any, example_inputs: Sequence[Any], target: tvm.target.Target, work_dir: str | Path, *,
                repeat: int = 5, max_seconds: float | None = None, seed: int = 0) -> list[ShapeResult]:
    """Measure the candidate shapes of every sum-then-shift layer shape of ``model`` and write the chosen
    ones into ``work_dir`` (:func:`schedules.shape_choices.save_choices`). ``max_seconds``: stop starting
    new layer shapes after this long (the rest keep their default shapes)."""
    reqs = shape_requests(model, example_inputs, target)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    results: list[ShapeResult] = []
    for key, low in tqdm(reqs.items(), desc="sum-then-shift shapes", unit="shape", disable=not reqs):
        if max_seconds is not None and time.monotonic() - t0 > max_seconds:
            log.info("shape tuning stopped after %.0f s; %d shape(s) keep their defaults", max_seconds,
                     len(reqs) - len(results))
            break
        act_bits = tuple(low.info.act_bits)
        build = lambda **kw: stst.build(low.info.kind, low.spec, low.logical_codes, target, act_bits, **kw)  # noqa: E731
        base = build()
        default = _shape_of(base)
        n_in = low.spec.in_features if low.info.kind == "dense" else low.spec.group_in
        times = {default: _time_ms(base, rng, repeat)}
        for cand in candidates(default, n_in, _layouts_differ(low, default.lanes))[1:]:
            try:
                k = build(**cand.build_kwargs())
            except ValueError as e:          # e.g. a lane count this target does not have
                log.debug("%s: shape %s skipped (%s)", key, cand, e)
                continue
            shape = _shape_of(k)
            times[shape] = min(times.get(shape, float("inf")), _time_ms(k, rng, repeat))
        best = min(times, key=times.get)
        if times[best] > (1.0 - MIN_GAIN) * times[default]:
            best = default
        results.append(ShapeResult(key, default, best, round(times[default], 5), round(times[best], 5), len(times)))
    if results:
        path = save_choices(work_dir, target, {r.key: (r.chosen, {"ms": r.chosen_ms, "default_ms": r.default_ms})
                                               for r in results})
        log.info("sum-then-shift shapes -> %s", path)
    return results
