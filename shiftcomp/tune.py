"""MetaSchedule autotuning for shiftcomp: tune, store per-target databases, apply them at compile time.

Layout of a stored database (TVM's ``JSONDatabase``)::

    schedules/<target_key>/database_workload.json        # one line per distinct PrimFunc (structural hash)
    schedules/<target_key>/database_tuning_record.json   # one line per measured schedule trace
    schedules/<target_key>/TUNING.md                      # budget + command that produced it (optional)

``target_key`` names the hardware a record was measured on (e.g. ``llvm-rocketlake`` or
``cuda-sm_90``); a database only applies to the target it was tuned for.

Flow (the same for the shift build and the float baseline, so "equal tuning" is equal by construction):

1. ``prepare_module(mod, target)``: the Relax module just before ``tvm.compile`` goes through
   DecomposeOpsForInference, LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR
   (= ``relax.get_pipeline("zero")`` without its database step). The fused PrimFuncs are the tasks.
2. ``tune_module(mod, target, trials, work_dir)``: MetaSchedule over those tasks, ``trials`` measured
   candidates **per task** (the global budget is ``trials * n_tasks``), LocalBuilder with the
   ``fast_build`` fix (see TVM_0.27_NOTES section 6), LocalRunner or an RPCRunner.
3. ``apply_database(mod, target, db_dir)``: runs step 1 and then ``MetaScheduleApplyDatabase``; every
   PrimFunc with a record becomes ``tirx.is_scheduled``; the rest are left for the caller's default
   schedules. Because both tune and apply run the identical ``prepare_module``, a database tuned on a
   module is found again by the compile of the same module.

Timing facts on the 2-core dev box (TVM_0.27_NOTES section 6): the first TuneContext in a process imports
``tvm.s_tir.tensor_intrin`` (~60 s); after that a trial costs ~1-3 s (build + 3 runs).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import tvm
from tvm import relax, tirx
from tvm.ir import IRModule
from tvm.target import Target

log = logging.getLogger("shiftcomp.tune")

#: Repository folder that holds the shipped databases, one sub-folder per target key.
SCHEDULES_DIR: Path = Path(__file__).resolve().parent.parent / "schedules"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


# ------------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------------
def physical_cores() -> int:
    """Physical CPU cores of this host (psutil when available, else ``os.cpu_count()``)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except Exception:  # pragma: no cover - psutil is a dependency
        pass
    return os.cpu_count() or 1


def host_cpu() -> str:
    """LLVM's name for this CPU (e.g. ``rocketlake``); never ``native`` (LLVM 22 drops AVX for it)."""
    return str(tvm.get_global_func("target.llvm_get_system_cpu")())


def resolve_target(target: str | Mapping[str, Any] | Target = "llvm", num_cores: int | None = None) -> Target:
    """A :class:`tvm.target.Target` usable for MetaSchedule.

    ``"llvm"`` means this host with its vector features (``mcpu`` from LLVM's host detection). Uses
    ``schedules.target.resolve_target`` when helper-3's module exists. LLVM targets get ``num-cores``
    (required by MetaSchedule; defaults to the physical core count); ``"cuda"`` without an arch gets the
    arch of the local GPU if there is one, else ``sm_90``.
    """
    t: Target | None = None
    try:  # the project's own resolver (owned by schedules/target.py) wins when present
        from schedules.target import resolve_target as _rt  # type: ignore

        t = _rt(target)
    except Exception:
        t = None
    if t is None:
        if isinstance(target, Target):
            t = target
        elif isinstance(target, str) and target in ("llvm", "cpu"):
            t = Target({"kind": "llvm", "mcpu": host_cpu()})
        elif isinstance(target, str) and target == "cuda":
            arch = "sm_90"
            try:
                dev = tvm.cuda(0)
                if dev.exist:
                    arch = "sm_" + str(dev.compute_version).replace(".", "")
            except Exception:
                pass
            t = Target({"kind": "cuda", "arch": arch}, host={"kind": "llvm", "mcpu": host_cpu()})
        elif isinstance(target, Mapping) and target.get("kind") == "cuda" and "host" not in target:
            t = Target(dict(target), host={"kind": "llvm", "mcpu": host_cpu()})
        elif isinstance(target, Mapping):
            t = Target(dict(target))
        else:
            t = Target(target)
    if t.kind.name == "cuda" and "max_threads_per_block" not in dict(t.attrs):
        # MetaSchedule's GPU rules need these (the "nvidia/..." tags carry them; a bare arch does not)
        cfg = dict(t.export())
        cfg.update({"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
                    "thread_warp_size": 32})
        cfg.pop("keys", None)
        cfg.pop("tag", None)
        host = cfg.pop("host", None)
        t = Target(cfg, host=host) if host is not None else Target(cfg)
    if t.kind.name == "llvm" and "num-cores" not in dict(t.attrs):
        cfg = dict(t.export())
        cfg["num-cores"] = int(num_cores or physical_cores())
        cfg.pop("keys", None)
        cfg.pop("tag", None)
        t = Target(cfg)
    return t


def target_key(target: str | Mapping[str, Any] | Target) -> str:
    """Folder name for a target's databases: ``llvm-<mcpu>`` or ``cuda-<arch>`` (helper-3's if present)."""
    try:
        from schedules.target import target_key as _tk  # type: ignore

        return str(_tk(target))
    except Exception:
        pass
    t = target if isinstance(target, Target) else resolve_target(target)
    attrs = dict(t.attrs)
    if t.kind.name == "llvm":
        return f"llvm-{attrs.get('mcpu', 'generic')}"
    if t.kind.name == "cuda":
        return f"cuda-{attrs.get('arch', 'unknown')}"
    return t.kind.name


def default_db_dir(target: str | Mapping[str, Any] | Target) -> Path:
    """``schedules/<target_key>/`` of this repository."""
    return SCHEDULES_DIR / target_key(target)


def has_database(db_dir: str | os.PathLike | None) -> bool:
    """Whether ``db_dir`` holds a non-empty JSONDatabase."""
    if db_dir is None:
        return False
    p = Path(db_dir)
    return (p / WORKLOAD_FILE).is_file() and (p / RECORD_FILE).is_file() and (p / RECORD_FILE).stat().st_size > 0


def _is_cuda(target: Target) -> bool:
    return target.kind.name == "cuda"


def cuda_available() -> bool:
    """True when a CUDA device is usable by the TVM runtime here."""
    try:
        return bool(tvm.runtime.enabled("cuda")) and bool(tvm.cuda(0).exist)
    except Exception:
        return False


# ------------------------------------------------------------------------------------------------
# builder / runner
# ------------------------------------------------------------------------------------------------
def fast_build(mod: IRModule, target: Target, _params: Any) -> tvm.runtime.Module:
    """MetaSchedule's ``default_build`` without ``import tvm.s_tir.tensor_intrin``.

    That import takes ~60 s on the 2-core dev box and LocalBuilder re-creates its worker pool per batch,
    so with the default build every candidate times out (TVM_0.27_NOTES section 6). Our kernels use no
    tensor intrinsics, so skipping it is safe.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _in_process_builder_cls():
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        """Builds candidates in the tuning process itself (serially) with :func:`fast_build`.

        LocalBuilder starts a fresh pool of worker processes for every batch, and each worker imports TVM
        (~5-10 s on a loaded 2-core box): with small per-task batches that start-up was most of the tuning
        time. Building here costs ~0.2-1 s per candidate and nothing per batch. No build timeout; a
        candidate that fails to build is reported as an error result like LocalBuilder does.
        """

        def build(self, build_inputs):  # noqa: D102
            out = []
            for bi in build_inputs:
                try:
                    out.append(BuilderResult(default_export(fast_build(bi.mod, bi.target, None)), None))
                except Exception as e:  # noqa: BLE001
                    out.append(BuilderResult(None, f"InProcessBuilder: {type(e).__name__}: {e}"))
            return out

    return InProcessBuilder


_BUILDER_CLS: Any = None


def make_builder(max_workers: int | None = None, timeout_sec: float = 90.0, kind: str = "inprocess"):
    """Candidate builder: ``"inprocess"`` (default, see ``InProcessBuilder``) or ``"local"`` (LocalBuilder
    with :func:`fast_build`; ``max_workers`` defaults to the physical core count, ``timeout_sec`` per build)."""
    global _BUILDER_CLS
    from tvm.s_tir import meta_schedule as ms

    if kind == "inprocess":
        if _BUILDER_CLS is None:
            _BUILDER_CLS = _in_process_builder_cls()
        return _BUILDER_CLS()
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


def make_runner(rpc: RPCSpec | Any | None = None, number: int = 3, repeat: int = 1,
                min_repeat_ms: int = 0, enable_cpu_cache_flush: bool = False):
    """LocalRunner, or an RPCRunner when ``rpc`` is an :class:`RPCSpec` / ``ms.runner.RPCConfig``.

    ``number`` runs per measurement, ``repeat`` measurements per candidate (MetaSchedule keeps the mean).
    """
    from tvm.s_tir import meta_schedule as ms

    ev = ms.runner.EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms,
                                   enable_cpu_cache_flush=enable_cpu_cache_flush)
    if rpc is None:
        return ms.runner.LocalRunner(evaluator_config=ev)
    if isinstance(rpc, RPCSpec):
        cfg = ms.runner.RPCConfig(tracker_host=rpc.tracker_host, tracker_port=rpc.tracker_port,
                                  tracker_key=rpc.key, session_priority=1,
                                  session_timeout_sec=rpc.session_timeout_sec)
        return ms.runner.RPCRunner(rpc_config=cfg, evaluator_config=ev, max_workers=rpc.max_workers)
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=ev, max_workers=1)


class _NoDeviceRunner:
    """Placeholder used for CUDA without a GPU: nothing is measured (see :func:`tune_module`)."""


# ------------------------------------------------------------------------------------------------
# module preparation and task extraction
# ------------------------------------------------------------------------------------------------
def _has_relax_function(mod: IRModule) -> bool:
    return any(isinstance(f, relax.Function) for _, f in mod.functions_items())


def prepare_module(mod: IRModule, target: Target) -> IRModule:
    """Legalize and fuse a Relax module exactly as tuning and apply_database both see it.

    Passes: DecomposeOpsForInference, CanonicalizeBindings, LegalizeOps, AnnotateTIROpPattern,
    FoldConstant, FuseOps, FuseTIR. Idempotent on an already fused module (the second run finds no new
    fusion). A module of PrimFuncs only is returned unchanged.
    """
    if not _has_relax_function(mod):
        return mod
    seq = tvm.transform.Sequential([
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ])
    with target, tvm.transform.PassContext(opt_level=3):
        out = seq(mod)
    return _strip_attrs(out, ("op_pattern",))


def _strip_attrs(mod: IRModule, names: Sequence[str]) -> IRModule:
    """Drop PrimFunc attrs that depend on how often the pipeline ran (``op_pattern``: AnnotateTIROpPattern
    annotates the fused functions the second time round), so that workloads hash the same."""
    upd = {}
    for gv, f in mod.functions_items():
        if isinstance(f, tirx.PrimFunc) and f.attrs is not None and any(n in f.attrs for n in names):
            for n in names:
                if n in f.attrs:
                    f = f.without_attr(n)
            upd[gv] = f
    for gv, f in upd.items():          # `mod` is the fresh output of the pass sequence: update in place
        mod[gv] = f
    return mod


def _as_module(mod_or_prims: IRModule | tirx.PrimFunc | Mapping[str, tirx.PrimFunc]) -> IRModule:
    if isinstance(mod_or_prims, tirx.PrimFunc):
        return IRModule({"main": mod_or_prims})
    if isinstance(mod_or_prims, IRModule):
        return mod_or_prims
    return IRModule({str(k): v for k, v in mod_or_prims.items()})


@dataclass
class Task:
    """One tuning task: a PrimFunc and how often the model calls it."""

    name: str
    prim: tirx.PrimFunc
    weight: float = 1.0


def extract_tasks(mod: IRModule | tirx.PrimFunc, target: Target,
                  name_filter: Sequence[str] | None = None) -> list[Task]:
    """Tuning tasks of a Relax module (after :func:`prepare_module`) or of PrimFuncs.

    Already scheduled PrimFuncs (``tirx.is_scheduled``) are skipped. ``name_filter``: keep only tasks
    whose name contains one of the given substrings (e.g. ``["shift"]``).
    """
    mod = _as_module(mod)
    tasks: list[Task] = []
    if _has_relax_function(mod):
        from tvm.s_tir import meta_schedule as ms

        for t in ms.relax_integration.extract_tasks(prepare_module(mod, target), target):
            prim = t.dispatched[0]["main"] if isinstance(t.dispatched[0], IRModule) else t.dispatched[0]
            if prim.attrs is not None and prim.attrs.get("tirx.is_scheduled", False):
                continue
            tasks.append(Task(str(t.task_name), prim, float(t.weight)))
    else:
        for gv, f in mod.functions_items():
            if isinstance(f, tirx.PrimFunc) and not (f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)):
                tasks.append(Task(gv.name_hint, f, 1.0))
    if name_filter:
        tasks = [t for t in tasks if any(s in t.name for s in name_filter)]
    return tasks


# ------------------------------------------------------------------------------------------------
# tuning
# ------------------------------------------------------------------------------------------------
@dataclass
class TuneSummary:
    """What a tuning run did. Times in seconds."""

    work_dir: str
    target_key: str
    tasks: list[str]
    trials_per_task: int
    measured: int
    seconds: float
    measured_on: str                 # "local", "rpc://host:port/key" or "not measured (no GPU)"
    best_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _record_ok(rec: Any) -> bool:
    secs = rec.run_secs
    return bool(secs) and all(float(v) < 1e9 for v in secs)


def _best_ms(db: Any, tasks: Sequence[Task]) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in tasks:
        try:
            wl = db.commit_workload(_normalize(t.prim))
            top = db.get_top_k(wl, 1)
            if top and _record_ok(top[0]):
                out[t.name] = 1e3 * sum(float(v) for v in top[0].run_secs) / len(top[0].run_secs)
        except Exception:  # pragma: no cover - informational only
            pass
    return out


def _normalize(prim: tirx.PrimFunc) -> IRModule:
    from tvm.s_tir.meta_schedule.tir_integration import _normalize_mod

    return _normalize_mod(prim)


def _cuda_dry_run(tasks: Sequence[Task], target: Target, n_build: int = 2) -> int:
    """No GPU: generate each task's design space and build ``n_build`` candidates (no measurement).

    Returns the number of candidates built. Raises if space generation or the build fails, so a broken
    CUDA path still shows up on a machine without a GPU.
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    built = 0
    builder = make_builder(max_workers=1)
    for t in tasks:
        ctx = ms.TuneContext(mod=_normalize(t.prim), target=target, space_generator="post-order-apply",
                             search_strategy="evolutionary", task_name=t.name)
        spaces = ctx.generate_design_space()
        if not spaces:
            raise RuntimeError(f"no design space for CUDA task {t.name}")
        inputs = [BuilderInput(s.mod, target) for s in spaces[:n_build]]
        for r in builder.build(inputs):
            if r.error_msg:
                raise RuntimeError(f"CUDA candidate build failed for {t.name}: {r.error_msg[:500]}")
            built += 1
    return built


def tune_module(mod: IRModule | tirx.PrimFunc, target: str | Mapping[str, Any] | Target, trials: int,
                work_dir: str | os.PathLike, rpc: RPCSpec | Any | None = None, *,
                name_filter: Sequence[str] | None = None, num_trials_per_iter: int = 16,
                seed: int | None = 0, cost_model: str = "xgb", runner_number: int = 3,
                max_seconds: float | None = None, chunk_size: int = 8, population_size: int = 128,
                genetic_num_iters: int = 2) -> TuneSummary:
    """Tune every (unscheduled) PrimFunc of ``mod`` with ``trials`` measured candidates per task.

    Args:
        mod: a Relax module (prepared with :func:`prepare_module` here) or PrimFunc(s).
        target: anything :func:`resolve_target` accepts.
        trials: measured candidates per task (global budget = trials * number of tasks).
        work_dir: JSONDatabase folder; records are appended to an existing database.
        rpc: measure through a TVM RPC tracker (:class:`RPCSpec` / ``ms.runner.RPCConfig``) instead of
            in-process LocalRunner.
        name_filter: tune only tasks whose name contains one of these substrings.
        num_trials_per_iter: candidates per search iteration (= per build batch).
        max_seconds: soft wall-clock budget: tasks are tuned in chunks of ``chunk_size`` and the remaining
            ones are skipped (and logged) once it is exceeded.
        population_size, genetic_num_iters: evolutionary-search size (smaller than TVM's defaults).

    For CUDA without a GPU nothing is measured: each task's design space is generated and two candidates
    are built, and no record is written (``measured_on == "not measured (no GPU)"``).
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir as get_loggers
    from tvm.s_tir.meta_schedule.utils import fork_seed

    tgt = resolve_target(target)
    key = target_key(tgt)
    tasks = extract_tasks(mod, tgt, name_filter)
    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if _is_cuda(tgt) and rpc is None and not cuda_available():
        built = _cuda_dry_run(tasks, tgt)
        log.warning("CUDA target %s: no GPU here; %d tasks generated, %d candidates built, nothing measured",
                    key, len(tasks), built)
        return TuneSummary(str(wd), key, [t.name for t in tasks], trials, 0, time.time() - t0,
                           "not measured (no GPU)", {})
    if not tasks:
        return TuneSummary(str(wd), key, [], trials, 0, 0.0, "local", {})
    db = ms.database.JSONDatabase(work_dir=str(wd))
    n_before = len(db)
    builder = make_builder()
    runner = make_runner(rpc, number=runner_number)
    per_iter = max(1, min(num_trials_per_iter, trials))
    # Tasks go through MetaSchedule's task scheduler in chunks (round-robin: every task gets exactly
    # `trials`); the wall-clock budget is checked between chunks. The evolutionary search is shrunk
    # (population 128, 2 genetic rounds) because on a 2-core box the default (512, 4) costs ~15 s per
    # task and iteration, more than measuring the candidates.
    chunk = max(1, int(chunk_size))
    for i in range(0, len(tasks), chunk):
        if max_seconds is not None and time.time() - t0 > max_seconds:
            log.warning("tuning budget of %.0f s exhausted; skipped %d task(s): %s", max_seconds,
                        len(tasks) - i, [x.name for x in tasks[i:]])
            break
        part = tasks[i:i + chunk]
        ctxs = []
        for t, logger, rs in zip(part, get_loggers(str(wd), [t.name for t in part]),
                                 fork_seed(seed, n=len(part))):
            strategy = ms.search_strategy.EvolutionarySearch(
                population_size=population_size, init_measured_ratio=0.2, init_min_unmeasured=16,
                genetic_num_iters=genetic_num_iters)
            ctxs.append(ms.TuneContext(mod=_normalize(t.prim), target=tgt, space_generator="post-order-apply",
                                       search_strategy=strategy, task_name=t.name, logger=logger,
                                       rand_state=rs, num_threads=physical_cores()).clone())
        ms.tune_tasks(tasks=ctxs, task_weights=[t.weight for t in part], work_dir=str(wd),
                           max_trials_global=trials * len(part), max_trials_per_task=trials,
                           num_trials_per_iter=per_iter, builder=builder, runner=runner, database=db,
                           cost_model=cost_model, task_scheduler="round-robin")
        log.info("tuned %d/%d task(s) after %.0f s", min(i + chunk, len(tasks)), len(tasks), time.time() - t0)
    where = "local" if rpc is None else (
        f"rpc://{rpc.tracker_host}:{rpc.tracker_port}/{rpc.key}" if isinstance(rpc, RPCSpec) else "rpc")
    return TuneSummary(str(wd), key, [t.name for t in tasks], trials, len(db) - n_before, time.time() - t0,
                       where, _best_ms(db, tasks))


def float_twin(model: "Any") -> "Any":
    """A float32 copy of a shift model: every shift layer replaced by ``nn.Conv2d``/``nn.Linear``
    holding its power-of-two weights ``quantized_weight()`` (activation quantization dropped).

    This is the multiply baseline of the same network (same architecture, same weight values).
    """
    import torch
    from torch import nn

    twin = copy.deepcopy(model).eval()

    def convert(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if hasattr(child, "integer_weights") and hasattr(child, "quantized_weight"):
                with torch.no_grad():
                    w = child.quantized_weight().detach().float().clone()
                bias = getattr(child, "bias", None)
                if hasattr(child, "kernel_size"):
                    new: nn.Module = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                               stride=child.stride, padding=child.padding,
                                               dilation=child.dilation, groups=child.groups,
                                               bias=bias is not None,
                                               padding_mode=getattr(child, "padding_mode", "zeros"))
                else:
                    new = nn.Linear(child.in_features, child.out_features, bias=bias is not None)
                with torch.no_grad():
                    new.weight.copy_(w)
                    if bias is not None:
                        new.bias.copy_(bias.detach().float())
                setattr(parent, name, new.eval())
            else:
                convert(child)

    convert(twin)
    return twin


def import_float(model: "Any", example_inputs: Sequence[Any]) -> IRModule:
    """Relax IRModule of a float torch model (``torch.export`` + ``from_exported_program``, params bound).

    Shift layers are replaced by their float twins first (:func:`float_twin`), so this is "the same
    network without the lowering pass".
    """
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    m = float_twin(model)
    with torch.no_grad():
        ep = torch.export.export(m, tuple(example_inputs))
    return from_exported_program(ep, keep_params_as_input=False, unwrap_unit_return_tuple=True)


def lower_shift(model: "Any", example_inputs: Sequence[Any], target: Target) -> IRModule:
    """The shift model's Relax module after shiftcomp's lowering pass, before any schedule/build.

    Uses ``shiftcomp.compiler.lower`` (helper-4) when it exists; see the interface request in
    BENCHMARKS.md ("Interface requests").
    """
    from shiftcomp import compiler  # type: ignore

    for name in ("lower", "lower_to_relax", "to_relax"):
        fn = getattr(compiler, name, None)
        if fn is not None:
            try:
                return fn(model, tuple(example_inputs), target=target)
            except TypeError:
                return fn(model, tuple(example_inputs))
    raise NotImplementedError("shiftcomp.compiler has no lower(model, example_inputs, target) -> IRModule yet")


def tune(model_or_module: "Any", example_inputs: Sequence[Any] | None = None,
         target: str | Mapping[str, Any] | Target = "llvm", trials: int = 32,
         work_dir: str | os.PathLike | None = None, rpc: RPCSpec | Any | None = None, *,
         include_float: bool = True, shift_only_filter: Sequence[str] | None = None,
         max_seconds: float | None = None, seed: int | None = 0) -> dict[str, TuneSummary]:
    """Tune a shift model (or an IRModule / PrimFunc) and store the records.

    Args:
        model_or_module: a torch ``nn.Module`` with shift layers, a Relax ``IRModule`` or PrimFunc(s).
        example_inputs: torch tensors (needed for an ``nn.Module``).
        target: ``"llvm"`` (this CPU), ``"cuda"``, a dict or a Target.
        trials: measured candidates per task, the same for the shift build and the float baseline.
        work_dir: database folder; default ``schedules/<target_key>/``.
        rpc: measure through an RPC tracker (see :class:`RPCSpec`).
        include_float: also tune the float twin (:func:`import_float`) with the same per-task budget, into
            the same database (distinct workloads), so the TVM-float baseline is tuned equally.
        shift_only_filter: restrict shift-side tasks to names containing these substrings.
        max_seconds: soft wall-clock budget per side (shift / float).

    Returns ``{"shift": TuneSummary, "float": TuneSummary}`` (``"float"`` only with include_float).
    """
    tgt = resolve_target(target)
    wd = Path(work_dir) if work_dir is not None else default_db_dir(tgt)
    out: dict[str, TuneSummary] = {}
    try:
        import torch

        is_torch = isinstance(model_or_module, torch.nn.Module)
    except Exception:  # pragma: no cover
        is_torch = False
    if is_torch:
        if example_inputs is None:
            raise ValueError("example_inputs are required to tune an nn.Module")
        shift_mod = lower_shift(model_or_module, example_inputs, tgt)
        out["shift"] = tune_module(shift_mod, tgt, trials, wd, rpc, name_filter=shift_only_filter,
                                   max_seconds=max_seconds, seed=seed)
        if include_float:
            out["float"] = tune_module(import_float(model_or_module, example_inputs), tgt, trials, wd, rpc,
                                       max_seconds=max_seconds, seed=seed)
    else:
        out["shift"] = tune_module(model_or_module, tgt, trials, wd, rpc, name_filter=shift_only_filter,
                                   max_seconds=max_seconds, seed=seed)
    return out


# ------------------------------------------------------------------------------------------------
# applying a database
# ------------------------------------------------------------------------------------------------
_DB_CACHE: dict[tuple[str, str, int, int], Any] = {}


def open_database(db_dir: str | os.PathLike, module_equality: str = "structural"):
    """Open an existing JSONDatabase (``allow_missing=False``), cached per process.

    Loading parses every stored workload's TIR (seconds for the shipped database); the cache is keyed by the
    folder and the files' size and mtime, so a database that tuning extended is re-read.
    """
    from tvm.s_tir import meta_schedule as ms

    p = Path(db_dir).resolve()
    st = (p / RECORD_FILE).stat()
    key = (str(p), module_equality, int(st.st_mtime_ns), int(st.st_size))
    db = _DB_CACHE.get(key)
    if db is None:
        db = ms.database.JSONDatabase(work_dir=str(p), allow_missing=False, module_equality=module_equality)
        _DB_CACHE[key] = db
    return db


def resolve_db_dir(target: Target, db_dir: str | os.PathLike | None | bool) -> Path | None:
    """``None``/``True`` -> ``schedules/<target_key>/`` if it holds a database; ``False`` -> no database;
    a path -> that path if it holds a database, else ``schedules/<target_key>/`` below it if that does."""
    if db_dir is False:
        return None
    if db_dir is None or db_dir is True:
        p = default_db_dir(target)
        return p if has_database(p) else None
    p = Path(db_dir)
    if has_database(p):
        return p
    sub = p / target_key(target)
    return sub if has_database(sub) else None


def apply_database(mod_or_prims: IRModule | tirx.PrimFunc | Mapping[str, tirx.PrimFunc],
                   target: str | Mapping[str, Any] | Target = "llvm",
                   db_dir: str | os.PathLike | None | bool = None) -> IRModule:
    """Schedule every PrimFunc that has a tuning record for ``target``; one call for the compiler.

    Args:
        mod_or_prims: the Relax module right before ``tvm.compile`` (its shift ops already lowered to
            ``call_tir``, no manual schedules applied yet), or PrimFunc(s).
        target: the compile target (the database folder is chosen by :func:`target_key`).
        db_dir: database folder, a parent of ``<target_key>/`` folders, ``None`` for the shipped
            ``schedules/<target_key>/``, or ``False`` to skip.

    Returns the module after :func:`prepare_module` (Relax input) with tuned PrimFuncs replaced by
    their best schedules and marked ``tirx.is_scheduled``; PrimFuncs without a record are unchanged (the
    caller applies its default schedules to those). Without a database the prepared module is returned.
    A PrimFunc input returns an IRModule of the scheduled PrimFunc(s) under the same names.
    """
    tgt = resolve_target(target)
    mod = _as_module(mod_or_prims)
    path = resolve_db_dir(tgt, db_dir)
    if _has_relax_function(mod):
        mod = prepare_module(mod, tgt)
        if path is None:
            return mod
        db = open_database(path)
        with tgt, db, tvm.transform.PassContext(opt_level=3):
            return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    if path is None:
        return mod
    db = open_database(path)
    out = {}
    for gv, f in mod.functions_items():
        if isinstance(f, tirx.PrimFunc) and not (f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)):
            sch = db.query_schedule(_normalize(f), target=tgt, workload_name="main")
            if sch is not None:
                f = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                if gv.name_hint != "main":
                    f = f.with_attr("global_symbol", gv.name_hint)
        out[gv.name_hint] = f
    return IRModule(out)


def scheduled_names(mod: IRModule) -> list[str]:
    """Names of PrimFuncs marked ``tirx.is_scheduled`` (what :func:`apply_database` found)."""
    return sorted(gv.name_hint for gv, f in mod.functions_items()
                  if isinstance(f, tirx.PrimFunc) and f.attrs is not None and f.attrs.get("tirx.is_scheduled", False))


def record_schedule(db_dir: str | os.PathLike, prim: tirx.PrimFunc, sch: Any, target: str | Mapping[str, Any] | Target,
                    run_secs: Sequence[float] = (1e-3,)) -> None:
    """Store a hand-made ``tvm.s_tir.Schedule`` of ``prim`` as a tuning record (no measurement).

    Use it to seed a database with a manual schedule (tuning then only keeps candidates that beat it) or
    to build a small database in tests without paying for MetaSchedule.
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    tgt = resolve_target(target)
    Path(db_dir).mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    wl = db.commit_workload(_normalize(prim))
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, [float(s) for s in run_secs], tgt,
                                                     ArgInfo.from_prim_func(prim)))


def database_summary(db_dir: str | os.PathLike) -> dict[str, Any]:
    """Counts of a stored database: workloads, records, measured records (run_secs < 1e9)."""
    p = Path(db_dir)
    n_wl = sum(1 for _ in open(p / WORKLOAD_FILE)) if (p / WORKLOAD_FILE).exists() else 0
    n_rec = ok = 0
    if (p / RECORD_FILE).exists():
        for line in open(p / RECORD_FILE):
            n_rec += 1
            try:
                rec = json.loads(line)
                secs = rec[1][1]
                ok += int(bool(secs) and all(float(v) < 1e9 for v in secs))
            except Exception:
                pass
    return {"workloads": n_wl, "records": n_rec, "measured": ok}


# ------------------------------------------------------------------------------------------------
# shiftcomp models: shift kernels, glue kernels, float baseline
# ------------------------------------------------------------------------------------------------
def canonical_spec(spec: Any) -> Any:
    """The spec a shift kernel's schedule is keyed by: ``s0`` and ``frac_bits`` zeroed.

    They only change the constant of the per-output scale ``2**(s0 - F)`` in the epilogue, never the
    loop nest, so one tuned schedule serves every layer of the same shape/accumulator (trained or not).
    """
    import dataclasses

    kw = {f: 0 for f in ("s0", "frac_bits") if hasattr(spec, f)}
    return dataclasses.replace(spec, **kw) if kw else spec


def shift_kernel_prim(kind: str, spec: Any, canonical: bool = True) -> tirx.PrimFunc:
    """Unscheduled compute PrimFunc of a shift kernel (``schedules.compute.shift_<kind>``).

    ``kind`` in ``dense``, ``conv2d``, ``dense_float``, ``conv2d_float``. With ``canonical`` the spec goes
    through :func:`canonical_spec` but keeps the real spec's epilogue form (exact ldexp or not).
    """
    from schedules import compute

    fn = getattr(compute, "shift_" + kind)
    if kind.endswith("_float"):
        return fn(canonical_spec(spec) if canonical else spec)
    exact = compute.needs_exact_scale(spec) if hasattr(compute, "needs_exact_scale") else None
    return fn(canonical_spec(spec) if canonical else spec, exact_scale=exact)


def _kernel_task_name(kind: str, spec: Any) -> str:
    if hasattr(spec, "kernel_h"):
        s = (f"shift_{kind}_n{spec.batch}_c{spec.in_channels}_{spec.height}x{spec.width}_o{spec.out_channels}"
             f"_k{spec.kernel_h}x{spec.kernel_w}_s{spec.stride[0]}_g{spec.groups}_{spec.acc_dtype}")
    else:
        s = f"shift_{kind}_m{spec.batch}_k{spec.in_features}_n{spec.out_features}_{spec.acc_dtype}"
    return s + ("_b" if getattr(spec, "has_bias", False) else "")


def staged_module(model: Any, example_inputs: Sequence[Any], target: Any, lower: bool = True
                  ) -> tuple[IRModule, Any]:
    """``shiftcomp.compile``'s module right where it applies a database (after legalize + fusion).

    Mirrors ``shiftcomp/compiler.py`` step for step (import, shift lowering, weight lifting,
    ``legalize_passes``, ``fusion_passes``) so that the glue/float PrimFuncs tuned here are structurally
    identical to the ones compile() looks up. Returns ``(fused_module, LoweringReport or None)``.
    """
    import torch
    from passes.lift_weights import lift_shift_weights
    from passes.lower_shift import LoweringReport
    from passes.pipeline import fusion_passes, legalize_passes, run_passes, shift_lowering_passes
    from shiftcomp.frontend import import_model

    tgt = resolve_target(target)
    was = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            imported = import_model(model, tuple(example_inputs))
    finally:
        for m, t in was.items():
            m.training = t
    mod = imported.mod
    report = None
    if lower:
        report = LoweringReport()
        mod = run_passes(mod, shift_lowering_passes(tgt, report), tgt)
        mod, _ = lift_shift_weights(mod)
    legal = run_passes(mod, legalize_passes(tgt), tgt)
    return run_passes(legal, fusion_passes(tgt), tgt), report


def _fused_tasks(mod: IRModule, target: Target) -> list[Task]:
    """Unscheduled, non-shift PrimFuncs of a fused module as tasks (deduplicated, weighted by calls)."""
    from tvm.s_tir import meta_schedule as ms

    out: list[Task] = []
    for t in ms.relax_integration.extract_tasks(mod, target):
        prim = t.dispatched[0]["main"] if isinstance(t.dispatched[0], IRModule) else t.dispatched[0]
        attrs = prim.attrs if prim.attrs is not None else {}
        if attrs.get("tirx.is_scheduled", False) or attrs.get("shiftcomp.role", "") == "shift":
            continue
        out.append(Task(str(t.task_name), prim, float(t.weight)))
    return out


def _kernel_specs(model: Any, example_inputs: Sequence[Any], target: Any) -> list[tuple[str, Any, str]]:
    """``(kind, spec, task_name)`` of the distinct shift kernels of a model."""
    _, report = staged_module(model, example_inputs, target, lower=True)
    seen: dict[str, tuple[str, Any, str]] = {}
    for low in report.layers.values():
        kind = ("dense" if hasattr(low.spec, "in_features") else "conv2d") + (
            "_float" if getattr(low, "float_acts", False) else "")
        name = _kernel_task_name(kind, canonical_spec(low.spec))
        seen.setdefault(name, (kind, low.spec, name))
    return list(seen.values())


def model_tasks(model: Any, example_inputs: Sequence[Any], target: Any, include_float: bool = True,
                include_glue: bool = True) -> dict[str, list[Task]]:
    """Tuning tasks of a shift model: ``shift_kernels`` (canonical unscheduled shift PrimFuncs, one per
    distinct kind/spec), ``shift_glue`` (the fused float glue around them: BN, ReLU, quantize...), and
    ``float`` (the float baseline's fused kernels: the float twin of the model through ``torch.export``,
    :func:`import_float` + :func:`prepare_module`, as built by ``shiftcomp.bench``'s ``tvm-float``)."""
    tgt = resolve_target(target)
    fused, report = staged_module(model, example_inputs, tgt, lower=True)
    kernels: dict[str, Task] = {}
    for low in report.layers.values():
        kind = "dense" if hasattr(low.spec, "in_features") else "conv2d"
        if getattr(low, "float_acts", False):
            kind += "_float"
        name = _kernel_task_name(kind, canonical_spec(low.spec))
        if name in kernels:
            kernels[name].weight += 1
        else:
            kernels[name] = Task(name, shift_kernel_prim(kind, low.spec), 1.0)
    out = {"shift_kernels": list(kernels.values())}
    if include_glue:
        out["shift_glue"] = _fused_tasks(fused, tgt)
    if include_float:
        out["float"] = _fused_tasks(prepare_module(import_float(model, example_inputs), tgt), tgt)
    return out


def _capture_manual_trace(kind: str, spec: Any, target: Target) -> Any:
    """The manual x86 schedule of ``schedules/x86.py`` for the canonical kernel, as a Schedule with trace.

    ``schedules.x86.schedule_<kind>(prim, spec, target)`` returns only the scheduled PrimFunc; the trace is
    captured by handing the module a ``Schedule`` factory that remembers the instance it creates.
    """
    import schedules.x86 as x86

    base = kind.replace("_float", "")
    fn = getattr(x86, f"schedule_{base}", None)
    if fn is None:
        return None
    real = x86.s_tir
    made: list[Any] = []

    class _Shim:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def Schedule(self, *a: Any, **k: Any) -> Any:  # noqa: N802
            sch = real.Schedule(*a, **k)
            made.append(sch)
            return sch

    x86.s_tir = _Shim()
    try:
        fn(_normalize(shift_kernel_prim(kind, spec, canonical=True))["main"], canonical_spec(spec), target)
    finally:
        x86.s_tir = real
    return made[0] if made else None


def seed_manual_schedules(kernel_tasks: Sequence[tuple[str, Any, str]], target: Any, work_dir: str | os.PathLike,
                          number: int = 3, repeat: int = 3) -> dict[str, float]:
    """Measure the manual (helper-3) x86 schedules of shift kernels and store them as tuning records.

    ``kernel_tasks``: ``(kind, spec, task_name)``. The records live next to MetaSchedule's, so the
    database's best record for a kernel is the faster of the manual and the tuned schedule (tuning can
    then never make a kernel slower than the default). Returns ``{task_name: manual_ms}``.
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    tgt = resolve_target(target)
    if tgt.kind.name != "llvm":
        return {}
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    builder = make_builder()
    runner = make_runner(None, number=number, repeat=repeat)
    out: dict[str, float] = {}
    for kind, spec, name in kernel_tasks:
        sch = _capture_manual_trace(kind, spec, tgt)
        if sch is None:
            continue
        (b,) = builder.build([BuilderInput(sch.mod, tgt)])
        if b.error_msg:
            log.warning("manual schedule of %s does not build: %s", name, b.error_msg[:300])
            continue
        prim = shift_kernel_prim(kind, spec, canonical=True)
        (fut,) = runner.run([RunnerInput(b.artifact_path, "cpu", ArgInfo.from_prim_func(prim))])
        r = fut.result()
        if r.error_msg:
            log.warning("manual schedule of %s does not run: %s", name, r.error_msg[:300])
            continue
        secs = [float(v) for v in r.run_secs]
        wl = db.commit_workload(_normalize(prim))
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, secs, tgt, ArgInfo.from_prim_func(prim)))
        out[name] = 1e3 * sum(secs) / len(secs)
    return out


def tune_tasks_list(tasks: Sequence[Task], target: Any, trials: int, work_dir: str | os.PathLike,
                    rpc: RPCSpec | Any | None = None, **kw: Any) -> TuneSummary:
    """:func:`tune_module` over an explicit task list (names kept)."""
    mod = IRModule({t.name: t.prim for t in tasks})
    return tune_module(mod, target, trials, work_dir, rpc, **kw)


def tune_model(model: Any, example_inputs: Sequence[Any], target: Any = "llvm", trials: int = 16,
               work_dir: str | os.PathLike | None = None, rpc: RPCSpec | Any | None = None, *,
               sides: Sequence[str] = ("shift_kernels", "shift_glue", "float"),
               max_seconds: float | None = None, seed: int | None = 0, seed_manual: bool = True
               ) -> dict[str, TuneSummary]:
    """Tune a shift model's kernels and its float baseline with the same per-task budget.

    With ``seed_manual`` the manual x86 schedules of the shift kernels are measured and stored first
    (:func:`seed_manual_schedules`), so the database never prefers a tuned kernel slower than the manual one.

    ``sides`` picks task groups of :func:`model_tasks`. ``max_seconds`` is a soft budget per side.
    Returns ``{side: TuneSummary}``; records go to ``work_dir`` (default ``schedules/<target_key>/``).
    """
    tgt = resolve_target(target)
    wd = Path(work_dir) if work_dir is not None else default_db_dir(tgt)
    groups = model_tasks(model, example_inputs, tgt, include_float="float" in sides,
                         include_glue="shift_glue" in sides)
    out = {}
    if "shift_kernels" in sides and seed_manual:
        manual = seed_manual_schedules(_kernel_specs(model, example_inputs, tgt), tgt, wd)
        log.info("manual schedules measured (ms): %s", manual)
    for side in sides:
        tasks = groups.get(side, [])
        log.info("tuning %s: %d task(s) x %d trials", side, len(tasks), trials)
        out[side] = tune_tasks_list(tasks, tgt, trials, wd, rpc, max_seconds=max_seconds, seed=seed)
    return out


def tuned_shift_kernel(kind: str, spec: Any, target: Any, db: Any) -> tirx.PrimFunc | None:
    """The shift kernel for ``(kind, spec)`` scheduled with the database's best record, or None.

    The record is looked up by the canonical kernel (:func:`shift_kernel_prim`) and its trace replayed on
    the layer's real kernel (same loop nest, its own scale constant). Returns None when there is no record
    or the trace does not apply.
    """
    from tvm.s_tir.meta_schedule.tir_integration import _normalize_mod

    tgt = resolve_target(target)
    canon = _normalize_mod(shift_kernel_prim(kind, spec, canonical=True))
    rec = db.query_tuning_record(canon, tgt, "main")
    if rec is None:
        return None
    real = _normalize_mod(shift_kernel_prim(kind, spec, canonical=False))
    try:
        sch = tvm.s_tir.Schedule(real)
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
    except Exception as e:  # pragma: no cover - same loop nest, should not happen
        log.warning("tuned trace does not apply to %s: %s", kind, e)
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


class shift_kernel_database:
    """Context manager: while active, shiftcomp's lowering takes tuned shift kernels from a database.

    It wraps ``passes.lower_shift._build_kernel`` (the one place the lowering asks ``schedules`` for a
    kernel): a record for the kernel's canonical PrimFunc wins, otherwise the manual schedule is used.
    ``hits`` lists the kinds/specs served from the database. This is a stop-gap until ``compile()`` calls
    :func:`tuned_shift_kernel` itself (see BENCHMARKS.md, "Interface requests").
    """

    def __init__(self, db_dir: str | os.PathLike | None, target: Any) -> None:
        self.target = resolve_target(target)
        self.path = resolve_db_dir(self.target, db_dir if db_dir is not None else None)
        self.hits: list[str] = []
        self._orig = None

    def __enter__(self) -> "shift_kernel_database":
        if self.path is None:
            return self
        import passes.lower_shift as ls

        db = open_database(self.path)
        orig = ls._build_kernel
        self._orig = orig

        def build(kind: str, spec: Any, target: Target) -> tirx.PrimFunc:
            prim = tuned_shift_kernel(kind, spec, target, db)
            if prim is not None:
                self.hits.append(_kernel_task_name(kind, canonical_spec(spec)))
                return prim
            return orig(kind, spec, target)

        ls._build_kernel = build
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._orig is not None:
            import passes.lower_shift as ls

            ls._build_kernel = self._orig
            self._orig = None


def compile_tuned(model: Any, example_inputs: Sequence[Any], target: Any = "llvm",
                  db_dir: str | os.PathLike | None | bool = None, lower: bool = True) -> Any:
    """``shiftcomp.compile`` with a database applied to shift kernels *and* glue/float kernels.

    ``db_dir``: as in :func:`resolve_db_dir` (``None`` = the shipped ``schedules/<target_key>/``,
    ``False`` = untuned). The returned CompiledModel's ``tuned_kernels`` lists every kernel served from
    the database (glue names from compile, shift kernels as ``shift_<kind>_<shape>``).
    """
    from shiftcomp.compiler import compile as sc_compile

    tgt = resolve_target(target)
    path = resolve_db_dir(tgt, db_dir)
    if path is None:
        return sc_compile(model, tuple(example_inputs), tgt, lower=lower)
    with shift_kernel_database(path, tgt) as hook:
        compiled = sc_compile(model, tuple(example_inputs), tgt, tuned=open_database(path), lower=lower)
    try:
        compiled.tuned_kernels = list(compiled.tuned_kernels) + hook.hits
    except Exception:  # pragma: no cover
        pass
    return compiled


# ------------------------------------------------------------------------------------------------
# command line:  python -m shiftcomp.tune --models resnet20 --batches 1 --trials 16
# ------------------------------------------------------------------------------------------------
def _append_tuning_log(wd: Path, line: str) -> None:
    p = wd / "TUNING.md"
    if not p.exists():
        p.write_text("# Tuning log of this database\n\nOne line per `python -m shiftcomp.tune` run "
                     "(budget = measured candidates per task; the database keeps the best record per kernel; "
                     "manual x86 shift-kernel schedules are stored as records too).\n\n")
    with open(p, "a") as f:
        f.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Tune zoo models (shift kernels, shift glue, float baseline) and/or the benchmark layer cases."""
    import argparse
    import sys

    import torch

    ap = argparse.ArgumentParser(prog="python -m shiftcomp.tune", description=main.__doc__)
    ap.add_argument("--models", nargs="*", default=[], help="zoo model names (shiftcomp.models)")
    ap.add_argument("--batches", nargs="*", type=int, default=[1])
    ap.add_argument("--layers", nargs="*", default=None,
                    help="benchmark layer cases to tune (names from shiftcomp.bench; 'all' for every case)")
    ap.add_argument("--sides", nargs="*", default=["shift_kernels", "shift_glue", "float"])
    ap.add_argument("--trials", type=int, default=16, help="measured candidates per task")
    ap.add_argument("--target", default="llvm")
    ap.add_argument("--work-dir", default=None, help="database folder (default schedules/<target_key>/)")
    ap.add_argument("--max-seconds", type=float, default=None, help="soft wall-clock budget per side and model")
    ap.add_argument("--weight-bits", type=int, default=5)
    ap.add_argument("--act-bits", type=int, nargs=2, default=[3, 5])
    ap.add_argument("--rpc", default=None, help="tracker host:port:key to measure through TVM RPC")
    ap.add_argument("--no-seed-manual", action="store_true")
    ap.add_argument("--keep-logs", action="store_true", help="keep MetaSchedule's per-task logs/ in the database dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from shiftcomp import bench
    from shiftcomp.models import INPUT_SHAPES, get_model

    tgt = resolve_target(a.target)
    wd = Path(a.work_dir) if a.work_dir else default_db_dir(tgt)
    wd.mkdir(parents=True, exist_ok=True)
    rpc = None
    if a.rpc:
        h, p, k = a.rpc.split(":")
        rpc = RPCSpec(h, int(p), k)
    cfg = bench.default_shift_config(a.weight_bits, tuple(a.act_bits))
    jobs: list[tuple[str, Any, tuple]] = []
    for name in a.models:
        torch.manual_seed(0)
        sm = bench.to_shift(get_model(name).eval(), cfg)
        for b in a.batches:
            jobs.append((f"{name}/b{b}", sm, (torch.randn(b, *INPUT_SHAPES[name]),)))
    if a.layers is not None:
        cases = bench.find_cases(None if a.layers in ([], ["all"]) else a.layers)
        for c in cases:
            jobs.append((f"layer:{c.name}", bench.to_shift(c.float_module(), cfg), c.example_inputs()))
    for label, sm, xs in jobs:
        t0 = time.time()
        res = tune_model(sm, xs, tgt, a.trials, wd, rpc, sides=a.sides, max_seconds=a.max_seconds,
                         seed_manual=not a.no_seed_manual)
        summ = {k: {"tasks": len(v.tasks), "measured": v.measured, "s": round(v.seconds)} for k, v in res.items()}
        line = (f"- {time.strftime('%Y-%m-%d %H:%M')} `{label}` trials/task={a.trials} act_bits={tuple(a.act_bits)} "
                f"w_bits={a.weight_bits} sides={summ} wall={time.time() - t0:.0f}s "
                f"loadavg={tuple(round(v, 2) for v in os.getloadavg())} measured_on={res[a.sides[0]].measured_on}")
        _append_tuning_log(wd, line)
        print(line, flush=True)
    if not a.keep_logs:
        shutil.rmtree(wd / "logs", ignore_errors=True)
    print(database_summary(wd), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
