"""``shiftcomp.benchmark``: one model against its multiply baselines, in one run."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shiftcomp.tune.measure import physical_cores

from .suites import Rows, bench_model

__all__ = ["benchmark", "BASELINES"]

#: what ``benchmark`` can compare: the shift build and its multiply baselines
BASELINES: tuple[str, ...] = ("tvm-float", "torch", "torch.compile")


def benchmark(model: nn.Module, example_inputs: Any, baselines: Sequence[str] = ("torch", "tvm-float"), *,
              target: Any = "llvm", tuned: Any = "auto", float_model: nn.Module | None = None,
              threads: int | None = None, warmup: int = 2, repeats: int = 10, min_repeat_ms: float = 20.0,
              log: Any = None) -> Rows:
    """Latency of the compiled shift model next to multiply baselines, measured the same way in one run.

    Args:
        model: a model with shift layers (``shiftcomp.convert``).
        example_inputs: a tensor or a sequence of tensors.
        baselines: any of :data:`BASELINES`: ``"tvm-float"`` (the same network with float32 weights
            through TVM), ``"torch"`` (eager), ``"torch.compile"``. The torch baselines run
            ``float_model`` when given (e.g. the float model before conversion), else the float twin
            of ``model`` (same weight values).
        target, tuned: as in ``shiftcomp.compile``.
        threads: threads for every backend (default: physical cores).
        warmup, repeats, min_repeat_ms: see :func:`shiftcomp.bench.timing.time_callable`.
        log: a ``print``-like callable for progress lines (default: silent).

    Returns:
        :class:`~shiftcomp.bench.suites.Rows` (dicts with ``backend``, ``median_ms``, ``rel_torch``,
        ``max_abs_err``, ...); ``rows.errors`` lists anything that failed.
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    return bench_model("model", type(model).__name__, model, inputs, ("shiftcomp", *baselines), target=target,
                       tuned=tuned, float_model=float_model, threads=threads or physical_cores(), warmup=warmup,
                       repeats=repeats, min_repeat_ms=min_repeat_ms, log=log or (lambda _line: None))
