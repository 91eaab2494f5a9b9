"""Tuning driver and database lookup.

Fast tests build a small database by hand (``record_schedule``: a schedule trace stored as a record,
no MetaSchedule search) and check that ``apply_database`` finds it for PrimFuncs and Relax modules.
The real MetaSchedule run (2 trials) is marked slow (~45-90 s: the first TuneContext imports
tvm.s_tir.tensor_intrin).
"""
import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax, te  # noqa: E402

from shiftcomp import tune as T  # noqa: E402
from shiftcomp.baseline import prepare_module  # noqa: E402
from shiftcomp.tune.measure import cuda_available  # noqa: E402


def _shift_dense(M=4, K=32, N=16):
    X = te.placeholder((M, K), "int32", "X")
    S = te.placeholder((K, N), "int8", "S")
    k = te.reduce_axis((0, K), "k")
    Y = te.compute((M, N), lambda i, j: te.sum(X[i, k] << S[k, j].astype("int32"), axis=k), name="Y")
    return te.create_prim_func([X, S, Y], index_dtype_override="int64")


def _manual_schedule(prim):
    sch = tvm.s_tir.Schedule(prim)
    blk = sch.get_sblock("Y")
    i, j, k = sch.get_loops(blk)
    jo, ji = sch.split(j, factors=[None, 16])
    sch.reorder(i, jo, k, ji)
    sch.vectorize(ji)
    return sch


def _relax_matmul(M=4, K=32, N=16):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((M, K), "float32"))
    w = np.random.default_rng(0).standard_normal((K, N)).astype("float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(relax.op.matmul(x, relax.const(w))))
        bb.emit_func_output(y)
    return bb.get(), w


def test_resolve_target_and_key():
    t = T.resolve_target("llvm")
    assert t.kind.name == "llvm" and int(dict(t.attrs)["num-cores"]) >= 1
    assert dict(t.attrs)["mcpu"] != "native"
    assert T.target_key(t).startswith("llvm-")
    c = T.resolve_target({"kind": "cuda", "arch": "sm_90"})
    assert "sm_90" in T.target_key(c)
    assert T.default_db_dir(t).parent == T.SCHEDULES_DIR


def test_apply_database_primfunc_lookup(tmp_path):
    prim = _shift_dense()
    tgt = T.resolve_target("llvm")
    with pytest.raises(ValueError, match="no tuning database"):             # a folder without one: an error
        T.apply_database(prim, tgt, tmp_path / "none")
    assert T.apply_database(prim, tgt, None)["main"].same_as(prim)           # no database: unchanged
    assert not T.has_database(tmp_path / "none")
    T.record_schedule(tmp_path / "db", prim, _manual_schedule(prim), tgt, run_secs=[1e-4])
    assert T.has_database(tmp_path / "db")
    assert T.database_summary(tmp_path / "db") == {"workloads": 1, "records": 1, "measured": 1}
    out = T.apply_database(prim, tgt, tmp_path / "db")
    assert T.scheduled_names(out) == ["main"]
    assert "vectorized" in out["main"].script()
    # a differently shaped PrimFunc has no record
    other = T.apply_database(_shift_dense(8, 32, 16), tgt, tmp_path / "db")
    assert T.scheduled_names(other) == []
    # the scheduled kernel computes the same thing
    ex = tvm.compile(out, target=tgt)
    rng = np.random.default_rng(0)
    x = rng.integers(-100, 100, (4, 32)).astype("int32")
    s = rng.integers(0, 8, (32, 16)).astype("int8")
    y = tvm.runtime.tensor(np.zeros((4, 16), "int32"))
    ex["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(s), y)
    assert np.array_equal(y.numpy(), (x[:, :, None] << s[None].astype("int32")).sum(1))


def test_apply_database_relax_module_and_parent_dir(tmp_path):
    mod, w = _relax_matmul()
    tgt = T.resolve_target("llvm")
    tasks = T.extract_tasks(mod, tgt)
    assert len(tasks) == 1                                    # matmul+relu fused into one task
    db = tmp_path / T.target_key(tgt)                         # parent-dir form: <dir>/<target_key>/
    for t in tasks:                                           # (an empty trace is ignored by the database)
        sch = tvm.s_tir.Schedule(t.prim)
        first = sch.get_child_blocks(sch.get_sblock("root"))[0]
        sch.parallel(sch.get_loops(first)[0])
        T.record_schedule(db, t.prim, sch, tgt)
    untuned = T.apply_database(mod, tgt, None)
    assert T.scheduled_names(untuned) == []
    tuned = T.apply_database(mod, tgt, tmp_path)
    assert len(T.scheduled_names(tuned)) == 1
    # applying to an already prepared module finds the same workloads (prepare is idempotent)
    assert len(T.scheduled_names(T.apply_database(prepare_module(mod, tgt), tgt, db))) == 1
    vm = relax.VirtualMachine(tvm.compile(tuned, target=tgt), tvm.cpu())
    x = np.random.default_rng(1).standard_normal((4, 32)).astype("float32")
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)


def test_resolve_database_rules(tmp_path, monkeypatch):
    tgt = T.resolve_target("llvm")
    assert T.resolve_database(None, tgt) == (None, None) and T.resolve_database("none", tgt) == (None, None)
    with pytest.raises(ValueError, match="no tuning database"):
        T.resolve_database(tmp_path, tgt)
    prim = _shift_dense()
    T.record_schedule(tmp_path / "x", prim, _manual_schedule(prim), tgt)
    db, where = T.resolve_database(tmp_path / "x", tgt)
    assert db is not None and where == str(tmp_path / "x")
    assert T.resolve_database(db, tgt) == (db, "<Database>")
    # "auto": this target's folder under schedules/, if it has a database
    import schedules.database as sdb
    monkeypatch.setattr(sdb, "SCHEDULES_DIR", tmp_path)
    assert T.resolve_database("auto", tgt) == (None, None)
    T.record_schedule(tmp_path / T.target_key(tgt), prim, _manual_schedule(prim), tgt)
    assert T.resolve_database("auto", tgt)[1] == str(tmp_path / T.target_key(tgt))


@pytest.mark.slow
def test_cuda_space_generation_and_build_without_gpu(tmp_path):
    # slow: the first TuneContext in a process imports tvm.s_tir.tensor_intrin (~30-60 s here)
    if cuda_available():
        pytest.skip("a GPU is present; the measured path is covered by the slow tests")
    tgt = T.resolve_target({"kind": "cuda", "arch": "sm_90"})
    summ = T.tune_module(_shift_dense(), tgt, 2, tmp_path / "cuda")
    assert summ.measured == 0 and summ.measured_on.startswith("not measured")
    assert not T.has_database(tmp_path / "cuda")


@pytest.mark.slow
def test_tune_tiny_primfunc_writes_database(tmp_path):
    prim = _shift_dense()
    tgt = T.resolve_target("llvm")
    summ = T.tune_module(prim, tgt, 2, tmp_path / "db", num_trials_per_iter=2)
    assert summ.measured >= 1 and (tmp_path / "db" / T.RECORD_FILE).exists()
    assert T.scheduled_names(T.apply_database(prim, tgt, tmp_path / "db")) == ["main"]


@pytest.mark.slow
def test_rpc_loopback_tuning(tmp_path):
    """Tracker + server on 127.0.0.1, MetaSchedule measuring through RPCRunner (~2 min)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "tune_rpc_loopback.py"
    spec = importlib.util.spec_from_file_location("tune_rpc_loopback", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--trials", "2", "--work-dir", str(tmp_path / "db"), "--timeout", "400"]) == 0
    assert T.database_summary(tmp_path / "db")["measured"] >= 1


# ---------------------------------------------------------------------------------------------- tune -> compile
def _tiny_shift_model():
    import torch
    from torch import nn

    import shiftcomp as sc

    torch.manual_seed(0)
    model = sc.convert(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)),
                       sc.ShiftConfig(act_bits=(4, 6))).eval()
    # batch 1: the per-term GEMV kernels, which are tunable (batched dense gets sum-then-shift, not tuned)
    return model, torch.randn(1, 16)


def _bit_exact(model, compiled, x) -> bool:
    import torch

    from shiftcomp.reference import exact

    with exact(model), torch.no_grad():
        return torch.equal(compiled(x), model(x))


def test_recorded_shift_kernels_are_what_compile_finds(tmp_path):
    """The shift-kernel tasks of ``model_tasks`` are the keys ``compile`` looks up: records written for them
    (here the manual schedules, measured: no search) are found and used, and the output stays bit-exact."""
    import shiftcomp as sc

    model, x = _tiny_shift_model()
    tgt = T.resolve_target("llvm")
    tasks = T.model_tasks(model, (x,), tgt, sides=("shift_kernels",))["shift_kernels"]
    assert len(tasks) == 2 and all(t.kernel is not None for t in tasks)
    manual = T.record_manual_schedules(tasks, tgt, tmp_path, number=1, repeat=1)
    assert set(manual) == {t.name for t in tasks}
    compiled = sc.compile(model, (x,), tgt, tuned=tmp_path)
    assert sorted(compiled.tuned_kernels) == sorted(t.name for t in tasks)
    assert all(low.source == "database" for low in compiled.layers.values())
    assert compiled.settings.database == str(tmp_path)
    assert _bit_exact(model, compiled, x)
    untuned = sc.compile(model, (x,), tgt, tuned=None)
    assert untuned.tuned_kernels == [] and all(low.source == "manual" for low in untuned.layers.values())


@pytest.mark.slow
def test_tune_then_compile_uses_the_records(tmp_path):
    """``shiftcomp.tune.tune`` (a real MetaSchedule search, a few trials) writes records that ``compile``
    finds for shift and glue kernels; ``trials`` bounds the measured candidates in total; bit-exact."""
    import shiftcomp as sc

    model, x = _tiny_shift_model()
    summary = T.tune(model, (x,), "llvm", trials=6, work_dir=tmp_path, sides=("shift_kernels", "shift_glue"),
                     record_manual=False)
    assert 0 < summary.measured <= 6
    compiled = sc.compile(model, (x,), "llvm", tuned=tmp_path)
    tuned_shift = [low.task_name for low in compiled.layers.values() if low.source == "database"]
    assert compiled.tuned_kernels and set(tuned_shift) <= set(summary.tasks)
    assert set(compiled.tuned_kernels) <= set(summary.tasks) | set(compiled.tuned_kernels[len(tuned_shift):])
    assert _bit_exact(model, compiled, x)


def test_glue_tasks_leave_the_hand_written_prologues_alone():
    """The sum-then-shift kernels' quantising packs are hand-scheduled vector loops (marked scheduled):
    MetaSchedule must not take them for glue (it failed on them estimating FLOPs: no default for Broadcast)."""
    import torch
    from torch import nn

    import shiftcomp as sc
    from shiftcomp.bench.cases import default_shift_config

    torch.manual_seed(0)
    model = sc.convert(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                     nn.AdaptiveAvgPool2d(1)), default_shift_config()).eval()
    glue = T.model_tasks(model, (torch.randn(1, 3, 8, 8),), T.resolve_target("llvm"),
                         sides=("shift_glue",))["shift_glue"]
    assert glue and not any("prologue" in t.name for t in glue), [t.name for t in glue]
