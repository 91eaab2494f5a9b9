"""How tuning candidates are built and measured: an in-process builder, LocalRunner or an RPC runner."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psutil
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import default_export
from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
from tvm.target import Target

__all__ = ["physical_cores", "cuda_available", "fast_build", "InProcessBuilder", "make_builder", "RPCSpec",
           "make_runner"]


def physical_cores() -> int:
    """Physical CPU cores of this host."""
    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def cuda_available() -> bool:
    """True when a CUDA device is usable by the TVM runtime here."""
    try:
        return bool(tvm.runtime.enabled("cuda")) and bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001 - a runtime without CUDA support raises
        return False


def fast_build(mod: tvm.IRModule, target: Target, _params: Any) -> tvm.runtime.Module:
    """MetaSchedule's ``default_build`` without importing ``tvm.s_tir.tensor_intrin``.

    That import takes about a minute on a small machine and LocalBuilder repeats it per worker pool, so
    candidates would time out; our kernels use no tensor intrinsics.
    """
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target=target)


@derived_object
class InProcessBuilder(PyBuilder):
    """Builds candidates in the tuning process, serially, with :func:`fast_build`.

    LocalBuilder starts a worker pool per batch and each worker imports TVM; with small batches that
    start-up dominated. A candidate that fails to build is reported as an error result.
    """

    def build(self, build_inputs):  # noqa: D102
        out = []
        for bi in build_inputs:
            try:
                out.append(BuilderResult(default_export(fast_build(bi.mod, bi.target, None)), None))
            except Exception as e:  # noqa: BLE001
                out.append(BuilderResult(None, f"InProcessBuilder: {type(e).__name__}: {e}"))
        return out


def make_builder(kind: str = "inprocess", max_workers: int | None = None, timeout_sec: float = 90.0) -> Any:
    """``"inprocess"`` (:class:`InProcessBuilder`) or ``"local"`` (LocalBuilder with :func:`fast_build`)."""
    if kind == "inprocess":
        return InProcessBuilder()
    return ms.builder.LocalBuilder(max_workers=max_workers or physical_cores(), timeout_sec=timeout_sec,
                                   f_build=fast_build)


@dataclass
class RPCSpec:
    """Where to measure: a TVM RPC tracker (``host:port``) and the device key registered with it."""

    tracker_host: str = "127.0.0.1"
    tracker_port: int = 9190
    key: str = "local-cpu"
    session_timeout_sec: int = 60
    max_workers: int = 1

    @classmethod
    def parse(cls, text: str) -> "RPCSpec":
        """``host:port:key``."""
        try:
            host, port, key = text.split(":")
            return cls(host, int(port), key)
        except ValueError:
            raise ValueError(f"--rpc must be host:port:key, got {text!r}") from None


def make_runner(rpc: RPCSpec | Any | None = None, number: int = 3, repeat: int = 1, min_repeat_ms: int = 0,
                enable_cpu_cache_flush: bool = False) -> Any:
    """LocalRunner, or an RPCRunner for an :class:`RPCSpec` / ``ms.runner.RPCConfig``.

    ``number`` runs per measurement, ``repeat`` measurements per candidate (MetaSchedule keeps the mean).
    """
    ev = ms.runner.EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms,
                                   enable_cpu_cache_flush=enable_cpu_cache_flush)
    if rpc is None:
        return ms.runner.LocalRunner(evaluator_config=ev)
    if isinstance(rpc, RPCSpec):
        cfg = ms.runner.RPCConfig(tracker_host=rpc.tracker_host, tracker_port=rpc.tracker_port,
                                  tracker_key=rpc.key, session_priority=1, session_timeout_sec=rpc.session_timeout_sec)
        return ms.runner.RPCRunner(rpc_config=cfg, evaluator_config=ev, max_workers=rpc.max_workers)
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=ev, max_workers=1)
