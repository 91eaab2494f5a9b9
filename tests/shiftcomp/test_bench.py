"""Benchmark harness: well-formed rows, CSV, markdown and chart on tiny cases (no timing assertions)."""
import csv

import pytest
import torch

from torch import nn

from shiftcomp import bench
from shiftcomp.bench.suites import _add_ratios as add_ratios

TINY_CONV = bench.LayerCase("tiny_conv", "conv", 4, 4, hw=6, kernel=3, stride=1, padding=1)
TINY_LIN = bench.LayerCase("tiny_lin", "linear", 16, 8, batch=2)


def test_time_callable_fields():
    t = bench.time_callable(lambda: sum(range(100)), warmup=1, repeats=3, min_repeat_ms=0.1)
    assert t.repeats == 3 and t.number >= 1
    assert 0 < t.min_ms <= t.median_ms
    assert t.q1_ms <= t.median_ms <= t.q3_ms


def test_layer_case_shapes_and_macs():
    assert TINY_CONV.out_hw == 6
    assert TINY_CONV.macs == 4 * 36 * 4 * 9
    (x,) = TINY_CONV.example_inputs()
    assert tuple(TINY_CONV.float_module()(x).shape) == (1, 4, 6, 6)
    dw = bench.find_cases(["mbv2_dw32@32"])[0]
    assert dw.macs == 32 * 32 * 32 * 9
    with pytest.raises(KeyError):
        bench.find_cases(["nope"])


def test_layer_bench_torch_rows_csv_md_png(tmp_path):
    rows = bench.run_layer_bench([TINY_CONV, TINY_LIN], backends=["torch"], threads=1, warmup=0, repeats=1,
                                 min_repeat_ms=0.1, log=lambda s: None)
    assert len(rows) == 2
    for r in rows:
        assert set(bench.ROW_FIELDS) <= set(r)
        assert r["backend"] == "torch" and r["threads"] == 1 and r["median_ms"] > 0
        assert r["rel_torch"] == pytest.approx(1.0)
    paths = bench.write_outputs(rows, tmp_path, "t", meta={"command": "test"})
    with open(paths["csv"]) as f:
        got = list(csv.DictReader(f))
    assert [g["case"] for g in got] == ["tiny_conv", "tiny_lin"]
    back = bench.read_csv(paths["csv"])
    assert back[0]["batch"] == 1 and isinstance(back[0]["median_ms"], float)
    md = paths["md"].read_text()
    assert "| case | batch | torch |" in md and "tiny_lin" in md and '"command": "test"' in md
    if "png" in paths:
        assert paths["png"].stat().st_size > 1000


def test_markdown_ratios_and_deepshift_constant():
    rows = []
    for b, ms in (("torch", 2.0), ("shiftcomp", 1.0), ("tvm-float", 4.0), ("deepshift-cpu*", 100.0)):
        r = {k: None for k in bench.ROW_FIELDS}
        r.update(suite="layer", case="c", batch=1, backend=b, median_ms=ms, threads=1)
        rows.append(r)
    add_ratios(rows)
    sh = [r for r in rows if r["backend"] == "shiftcomp"][0]
    assert sh["rel_torch"] == pytest.approx(0.5) and sh["speedup_vs_deepshift"] == pytest.approx(100.0)
    md = bench.to_markdown(rows)
    line = [l for l in md.splitlines() if l.startswith("| c |")][0]
    assert "0.50×" in line and "0.25×" in line and "100×" in line


def test_deepshift_constants_attached():
    case = bench.find_cases(["linear64x512x10"])[0]
    rows = bench.run_layer_bench([case], backends=["torch"], threads=1, warmup=0, repeats=1, min_repeat_ms=0.1,
                                 log=lambda s: None)
    ds = [r for r in rows if r["backend"] == "deepshift-cpu*"]
    assert len(ds) == 1 and ds[0]["median_ms"] == bench.DEEPSHIFT_CPU_MS["linear64x512x10"]["deepshift_ms"]
    assert "not run here" in ds[0]["note"]


def test_weight_bytes_shift_model():
    import shiftcomp as sc

    m = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False))
    sc.convert(m, sc.ShiftConfig(weight_bits=5, act_bits=(8, 8)))
    wb = bench.weight_bytes(m, 5)
    assert wb == {"packed": 64 * 32 * 5 // 8, "float32": 64 * 32 * 4}


def test_tvm_float_backend_tiny():
    pytest.importorskip("tvm")
    rows = bench.run_layer_bench([TINY_LIN], backends=["tvm-float", "torch"], tuned=None, threads=1, warmup=0,
                                 repeats=1, min_repeat_ms=0.1, log=lambda s: None)
    tv = [r for r in rows if r["backend"] == "tvm-float"][0]
    assert tv["median_ms"] > 0 and tv["tuned"] is False and tv["build_s"] >= 0


def test_shiftcomp_backend_tiny_linear():
    pytest.importorskip("tvm")
    pytest.importorskip("shiftcomp.compiler")
    rows = bench.run_layer_bench([TINY_LIN], backends=["shiftcomp", "torch"], tuned=None, threads=1, warmup=0,
                                 repeats=1, min_repeat_ms=0.1, log=lambda s: None)
    sc = [r for r in rows if r["backend"] == "shiftcomp"][0]
    assert sc["median_ms"] > 0 and sc["tuned"] is False
    assert sc["max_abs_err"] is not None and sc["max_abs_err"] < 1e-4     # vs the torch shift layer (eval)
    assert sc["rel_torch"] > 0


def test_profile_module_tiny():
    tvm = pytest.importorskip("tvm")
    from tvm import relax
    import numpy as np

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(np.ones((16, 8), "float32"))))
            z = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(z)
    from shiftcomp.baseline import prepare_module
    from schedules.target import resolve_target
    mod = prepare_module(bb.get(), resolve_target("llvm"))
    rows = bench.profile_module(mod, "llvm", repeat=1, min_repeat_ms=1)
    assert len(rows) == 1 and rows[0]["calls"] == 1 and rows[0]["ms_each"] > 0
    assert rows[0]["share"] == pytest.approx(1.0)


def test_shift_peak_formula():
    assert bench.shift_peak_terms_per_s(2, 2.3) == pytest.approx(2 * 16 * 2.3e9)


def test_package_benchmark_compares_against_baselines():
    """``shiftcomp.benchmark`` (in ``shiftcomp.__all__``): the shift build and the asked baselines, one run."""
    import shiftcomp

    torch.manual_seed(0)
    m = shiftcomp.convert(nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8)),
                          shiftcomp.ShiftConfig(act_bits=(4, 6))).eval()
    rows = shiftcomp.benchmark(m, torch.randn(4, 32), baselines=["torch", "tvm-float"], tuned=None, threads=1,
                               warmup=0, repeats=2, min_repeat_ms=0.1)
    assert [r["backend"] for r in rows] == ["shiftcomp", "torch", "tvm-float"] and not rows.errors
    assert all(r["median_ms"] > 0 for r in rows)
    shift = rows[0]
    assert shift["max_abs_err"] < 1e-4 and shift["rel_torch"] > 0 and shift["batch"] == 4
    with pytest.raises(ValueError, match="unknown baseline"):
        shiftcomp.benchmark(m, torch.randn(4, 32), baselines=["numpy"])


def test_set_threads_can_go_back_up_after_one_thread():
    """TVM sizes its pool once: a first set_threads(1) must not cap a later set_threads(2)."""
    import os
    import subprocess
    import sys
    code = ("from shiftcomp.bench import set_threads\nfrom shiftcomp.threads import physical_cores\n"
            "set_threads(1)\nprint(set_threads(2)['tvm_threads'], min(2, physical_cores()))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got, want = out.stdout.split()[-2:]
    assert int(got) >= int(want)


def test_profile_vm_script_times_every_call_of_a_compiled_resnet(tmp_path):
    from experiment_support import csv_rows, experiment_script
    script = experiment_script("profile_vm")
    assert script.main(["--batch", "1", "--rounds", "1", "--out", str(tmp_path)]) == 0
    rows = csv_rows(tmp_path / "profile_resnet20_b1_t1.csv")
    groups = {r["group"] for r in rows}
    assert {"shift kernel (+ fused epilogue)", "quantising pack"} <= groups
    assert abs(sum(float(r["share"]) for r in rows) - 1) < 0.01
    # ResNet-20's BN + ReLU run inside the conv kernels
    assert any(r["kernel"].endswith("_multiply_add_relu") for r in rows)
    # 20 shift layers; each block's conv1 (-> BN -> ReLU) writes its conv2's packed input itself (9 blocks)
    assert sum(1 for r in rows if "_into_layer" in r["kernel"]) == 9
    assert sum(int(r["calls"]) for r in rows if r["group"] == "quantising pack") == 20 - 9


def test_segment_structure_probe_builds_the_four_code_structures(tmp_path):
    from experiment_support import csv_rows, experiment_script
    script = experiment_script("probe_segment_structure")
    out = tmp_path / "segments"
    assert script.main(["--batch", "1", "--rounds", "1", "--out", str(out)]) == 0
    rows = {r["codes"]: r for r in csv_rows(tmp_path / "segments.csv")}
    assert set(rows) == {"he", "uniform", "jitter", "single"}
    # uniform and jitter: 9 levels, each one segment of + and - terms; single: one level
    assert float(rows["uniform"]["segments_per_channel"]) == float(rows["jitter"]["segments_per_channel"]) == 9
    assert float(rows["single"]["segments_per_channel"]) == 1
    assert all(float(r["g_lane_terms_per_s"]) > 0 for r in rows.values())
