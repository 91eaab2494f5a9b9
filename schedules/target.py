"""Target helpers: turn the user's ``target`` argument into a concrete :class:`tvm.target.Target`.

* ``"llvm"`` means *this host's CPU with its vector features*. TVM's ``mcpu: native`` is accepted by
  ``Target()`` but LLVM 22 (the wheel's) rejects it at code generation and silently falls back to
  ``generic`` (no AVX at all), so the CPU name is asked from LLVM instead
  (``target.llvm_get_system_cpu``, e.g. ``"rocketlake"``), with ``num-cores = os.cpu_count()``
  (MetaSchedule requires ``num-cores``).
* ``"cuda"`` means the local GPU's architecture when a GPU is visible, else ``sm_80``; the host is the
  ``"llvm"`` target above.
* A dict or a :class:`~tvm.target.Target` is taken as given (cross compilation); a CUDA one without a
  host gets the local LLVM host, and without ``max_threads_per_block`` / ``max_shared_memory_per_block``
  the limits every supported NVIDIA GPU has (1024 threads, 48 KiB), which MetaSchedule's GPU rules need.
* This is the one target resolver: the compiler, the tuner and the benchmarks all call it.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any, Mapping, Union

import tvm
from tvm.target import Target

__all__ = ["resolve_target", "target_key", "host_cpu", "llvm_host_target", "l1d_bytes", "has_feature", "TargetLike"]

TargetLike = Union[str, Mapping[str, Any], Target]

DEFAULT_CUDA_ARCH = "sm_80"


@functools.lru_cache(maxsize=None)
def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. ``"rocketlake"``, ``"skylake-avx512"``); never ``native``."""
    try:
        cpu = str(tvm.get_global_func("target.llvm_get_system_cpu")())
    except Exception:  # pragma: no cover - every LLVM-enabled wheel has it
        cpu = ""
    return cpu if cpu and cpu != "generic" else "x86-64-v2"


#: L1 data cache of CPUs by LLVM ``mcpu`` prefix, for targets other than this host (cross compilation)
L1D_BY_MCPU = (("sapphirerapids", 48), ("emeraldrapids", 48), ("graniterapids", 48), ("icelake", 48),
               ("tigerlake", 48), ("rocketlake", 48), ("alderlake", 48), ("raptorlake", 48),
               ("meteorlake", 48), ("arrowlake", 48), ("lunarlake", 48), ("znver", 32), ("skylake", 32))
DEFAULT_L1D_KIB = 32


@functools.lru_cache(maxsize=None)
def _host_l1d() -> int | None:
    """This host's level-1 data cache in bytes (sysfs), or None when it cannot be read."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            def read(name: str) -> str:
                with open(os.path.join(base, entry, name)) as f:
                    return f.read().strip()
            if read("level") == "1" and read("type") in ("Data", "Unified"):
                m = re.fullmatch(r"(\d+)([KMG]?)", read("size"))
                if m:
                    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
    except (OSError, ValueError):
        pass
    return None


def l1d_bytes(target: Target) -> int:
    """L1 data cache per core of an LLVM target's CPU: this host's (sysfs) when ``mcpu`` is the host's, else
    by ``mcpu`` (:data:`L1D_BY_MCPU`), else :data:`DEFAULT_L1D_KIB`."""
    mcpu = str(target.attrs.get("mcpu", "") or "")
    if mcpu == host_cpu():
        host = _host_l1d()
        if host:
            return host
    for prefix, kib in L1D_BY_MCPU:
        if mcpu.startswith(prefix):
            return kib << 10
    return DEFAULT_L1D_KIB << 10


def llvm_host_target() -> Target:
    """The LLVM target for this host: detected ``mcpu`` and ``num-cores = os.cpu_count()``."""
    return Target({"kind": "llvm", "mcpu": host_cpu(), "num-cores": int(os.cpu_count() or 1)})


def _cuda_arch() -> str:
    """``sm_XY`` of the local GPU 0, or :data:`DEFAULT_CUDA_ARCH` when there is no usable GPU."""
    try:
        dev = tvm.cuda(0)
        if dev.exist:
            return "sm_" + str(dev.compute_version).replace(".", "")
    except Exception:
        pass
    return DEFAULT_CUDA_ARCH


def resolve_target(target: TargetLike) -> Target:
    """Resolve a user target into a concrete :class:`tvm.target.Target`.

    Args:
        target: ``"llvm"`` (this host's CPU, detected features), ``"cuda"`` (local GPU arch or
            ``sm_80``, host = this CPU), any other target string TVM parses (e.g. a tag such as
            ``"nvidia/nvidia-h100"``), a dict (``{"kind": "llvm", "mcpu": "skylake-avx512"}``), or a
            ``Target`` (returned unchanged unless it is a host-less CUDA target).

    Returns:
        The Target. ``mcpu: native`` is replaced by the detected CPU name (see module docstring).
    """
    if isinstance(target, Target):
        tgt = target
    elif isinstance(target, str):
        name = target.strip()
        if name == "llvm":
            return llvm_host_target()
        if name == "cuda":
            return _with_gpu_limits(Target({"kind": "cuda", "arch": _cuda_arch()}))
        tgt = Target(name)
    elif isinstance(target, Mapping):
        cfg = dict(target)
        if cfg.get("kind") == "llvm" and cfg.get("mcpu") == "native":
            cfg["mcpu"] = host_cpu()
        tgt = Target(cfg)
    else:
        raise TypeError(f"target must be a str, dict or tvm.target.Target, not {type(target).__name__}")
    if tgt.kind.name == "cuda":
        tgt = _with_gpu_limits(tgt)
    return tgt


def has_feature(target: Target, feature: str) -> bool:
    """Whether an LLVM target's CPU has ``feature`` (LLVM's name: ``"avx2"``, ``"avx512bw"``, ``"avx512vbmi"``);
    False for other target kinds and for features LLVM does not know on that architecture."""
    if target.kind.name != "llvm":
        return False
    try:
        from tvm.target import codegen

        return bool(codegen.target_has_features(feature, target))
    except Exception:  # noqa: BLE001 - non-x86 LLVM targets
        return False


def _with_gpu_limits(tgt: Target) -> Target:
    cfg = dict(tgt.export())
    host = cfg.pop("host", None)
    cfg.pop("keys", None)
    cfg.pop("tag", None)
    cfg.setdefault("max_threads_per_block", 1024)
    cfg.setdefault("max_shared_memory_per_block", 49152)
    cfg.setdefault("thread_warp_size", 32)
    return Target(cfg, host=host if host is not None else llvm_host_target())


def target_key(target: TargetLike) -> str:
    """A short file-system-safe key for per-target folders (tuning databases).

    Examples: ``"llvm-rocketlake"``, ``"llvm-generic"`` (no ``mcpu``), ``"cuda-sm_90"``.
    """
    tgt = resolve_target(target)
    kind = tgt.kind.name
    if kind == "cuda":
        detail = str(tgt.attrs.get("arch", "") or DEFAULT_CUDA_ARCH)
    elif kind == "llvm":
        detail = str(tgt.attrs.get("mcpu", "") or "generic")
    else:
        detail = str(tgt.attrs.get("mcpu", "") or tgt.attrs.get("arch", "") or "default")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{kind}-{detail}")
