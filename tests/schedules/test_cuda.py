"""CUDA kernels without a GPU: generated source, PTX (nvcc), and the source *executed on the CPU*.

* The CUDA C that TVM generates for every kernel kind is shift/xor/sub/add on data: no ``*`` on data
  except the one per-output float scale ``float(acc) * 0x1p-11f``.
* nvcc compiles it to PTX; a data-flow (taint) pass over the PTX -- registers loaded from global memory and
  everything computed from them -- finds no integer ``mul``/``mad`` on data (those that exist are index math)
  and float multiplies only by an immediate (the scale). Skipped without nvcc.
* The same CUDA C is compiled by g++ as C++20 with ``threadIdx``/``blockIdx`` shims and run over the launch
  grid sequentially (our kernels use no shared memory or barriers, so that is a valid execution), under
  UBSan (no shift count out of range, no signed overflow): fixed-point results equal the reference bit for
  bit, float-activation results equal the LLVM kernel bit for bit (same summation order). Skipped without g++.
* On a machine with a GPU, the kernels also run on it (``@pytest.mark.gpu``; skipped cleanly otherwise).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

tvm = pytest.importorskip("tvm")
from tvm import s_tir, te, tirx  # noqa: E402

from schedules import build_shift_kernel  # noqa: E402
from schedules.compute import Conv2dSpec, DenseSpec, conv2d_weight_codes, dense_weight_codes  # noqa: E402
from schedules.target import resolve_target  # noqa: E402
from shiftcomp import reference  # noqa: E402
from cuda_support import (CUDA, HAS_GXX, HAS_NVCC, data_statements_with_star, emulate_cuda, has_gpu,  # noqa: E402
                          nvcc_ptx, ptx_data_multiplies)

LLVM = resolve_target("llvm")

CASES = [  # (id, kind, spec)
    ("dense_i32", "dense", DenseSpec(3, 37, 21, 5, -6, "int32", True)),
    ("dense_i64_gemv", "dense", DenseSpec(1, 50, 70, 16, -31, "int64", False)),
    ("conv_groups_pad", "conv2d", Conv2dSpec(2, 4, 5, 6, 20, 3, 3, (1, 2), (1, 0, 2, 1), (1, 1), 2, 5, -6,
                                             "int32", True)),
    ("conv_dw_i64", "conv2d", Conv2dSpec(1, 3, 7, 7, 3, 3, 3, 1, 1, 2, 3, 8, -31, "int64", True)),
    ("conv_tiny", "conv2d", Conv2dSpec(1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, -3, "int32", False)),
    ("dense_float", "dense_float", DenseSpec(2, 19, 12, 0, -6, "int32", True)),
    ("conv_float", "conv2d_float", Conv2dSpec(1, 3, 5, 6, 6, 3, 3, 1, 1, 1, 1, 0, -6, "int32", True)),
]
IDS = [c[0] for c in CASES]


def _source(kind, spec) -> tuple:
    prim = build_shift_kernel(kind, spec, CUDA)
    ex = tvm.compile(prim.with_attr("global_symbol", "main"), CUDA)
    return prim, ex.mod.imports[0].inspect_source()


_SOURCES: dict = {}


def source(case_id: str) -> tuple:
    if case_id not in _SOURCES:
        _, kind, spec = next(c for c in CASES if c[0] == case_id)
        _SOURCES[case_id] = _source(kind, spec)
    return _SOURCES[case_id]


# ------------------------------------------------------------------------------------------ CUDA C source
@pytest.mark.parametrize("case_id", IDS)
def test_cuda_source_is_shift_and_add(case_id):
    _, src = source(case_id)
    assert "__global__" in src and "<<" in src
    assert data_statements_with_star(src) == []


def test_source_check_catches_a_multiply():
    """Negative control: a kernel that multiplies data is flagged."""
    X = te.placeholder((64,), "int32", name="X")
    G = te.placeholder((64,), "int8", name="G")
    Y = te.compute((64,), lambda i: X[i] * G[i].astype("int32"), name="Y")
    sch = s_tir.Schedule(te.create_prim_func([X, G, Y]).with_attr("global_symbol", "main"))
    bx, tx = sch.split(sch.get_loops(sch.get_sblock("Y"))[0], [None, 32])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    src = tvm.compile(sch.mod, CUDA).mod.imports[0].inspect_source()
    assert data_statements_with_star(src)
    if HAS_NVCC:
        int_muls, _ = ptx_data_multiplies(nvcc_ptx(src))
        assert int_muls


# ------------------------------------------------------------------------------------------ PTX
@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not on PATH")
@pytest.mark.parametrize("case_id", IDS)
def test_ptx_has_no_multiply_on_data(case_id):
    _, src = source(case_id)
    ptx = nvcc_ptx(src)
    assert ".target sm_80" in ptx and "shl.b" in ptx
    int_muls, float_muls = ptx_data_multiplies(ptx)
    assert int_muls == [], int_muls
    for op, ops in float_muls:  # only the per-output scale: a multiply by an immediate float
        assert any(re.fullmatch(r"0[fF][0-9A-Fa-f]{8}", o) for o in ops[1:]), (op, ops)


# ------------------------------------------------------------------------------------------ CPU emulation
def _inputs(kind: str, spec, seed: int) -> tuple:
    """Kernel buffers and the reference output for a spec (fixed point: reference.out; float: None)."""
    rng = np.random.default_rng(seed)
    dense = kind.startswith("dense")
    wshape = (spec.out_features, spec.in_features) if dense else (
        spec.out_channels, spec.group_in, spec.kernel_h, spec.kernel_w)
    red = spec.in_features if dense else spec.group_in * spec.kernel_h * spec.kernel_w
    bits = 32 if spec.acc_dtype == "int32" else 64
    span = max(0, min(20, bits - 1 - 15 - int(np.ceil(np.log2(red + 1))) - 1))
    shift = rng.integers(spec.s0, spec.s0 + span + 1, wshape).astype(np.int8)
    sign = rng.integers(-1, 2, wshape).astype(np.int8)
    xshape = spec.x_shape
    if kind.endswith("float"):
        x = (rng.standard_normal(xshape) * 2.0 ** rng.integers(-140, 20, xshape)).astype(np.float32)
    else:
        x = rng.integers(-2 ** 15, 2 ** 15, xshape).astype(np.int32)
    n_out = spec.out_shape[1]
    bias = rng.standard_normal(n_out).astype(np.float32) if spec.has_bias else None
    codes = dense_weight_codes(shift, sign, spec.s0) if dense else conv2d_weight_codes(shift, sign, spec.s0,
                                                                                       spec.groups)
    bufs = {"X_q": x, "codes": codes, "out": np.zeros(spec.out_shape, np.float32)}
    if bias is not None:
        bufs["bias"] = bias
    ref = None
    if not kind.endswith("float"):
        bt = None if bias is None else torch.from_numpy(bias)
        xt, st, gt = torch.from_numpy(x), torch.from_numpy(shift), torch.from_numpy(sign)
        ref = (reference.shift_linear(xt, st, gt, spec.frac_bits, bt) if dense else
               reference.shift_conv2d(xt, st, gt, spec.frac_bits, bt, spec.stride, spec.padding, spec.dilation,
                                      spec.groups)).out
    return bufs, ref


def _llvm_out(kind, spec, bufs) -> np.ndarray:
    ex = tvm.compile(build_shift_kernel(kind, spec, LLVM).with_attr("global_symbol", "main"), LLVM)
    args = [bufs["X_q"], bufs["codes"]] + ([bufs["bias"]] if "bias" in bufs else [])
    out = tvm.runtime.tensor(np.zeros(spec.out_shape, np.float32))
    ex["main"](*[tvm.runtime.tensor(a) for a in args], out)
    return out.numpy()


@pytest.mark.skipif(not HAS_GXX, reason="g++ not on PATH")
@pytest.mark.parametrize("case_id", IDS)
def test_cuda_source_runs_correctly_on_cpu(case_id):
    _, kind, spec = next(c for c in CASES if c[0] == case_id)
    prim, src = source(case_id)
    for seed in range(2):
        bufs, ref = _inputs(kind, spec, seed)
        got = emulate_cuda(src, prim, bufs)["out"]
        if ref is not None:
            assert torch.equal(torch.from_numpy(got), ref), (case_id, seed)
        else:  # float activations: same per-output summation order as the LLVM kernel -> identical bits
            assert np.array_equal(got.view(np.int32), _llvm_out(kind, spec, bufs).view(np.int32)), (case_id, seed)


# ------------------------------------------------------------------------------------------ real GPU
@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu(), reason="no CUDA GPU (tvm.cuda(0).exist is False)")
@pytest.mark.parametrize("case_id", IDS)
def test_cuda_kernels_on_gpu(case_id):
    _, kind, spec = next(c for c in CASES if c[0] == case_id)
    target = resolve_target("cuda")
    ex = tvm.compile(build_shift_kernel(kind, spec, target).with_attr("global_symbol", "main"), target)
    dev = tvm.cuda(0)
    bufs, ref = _inputs(kind, spec, 0)
    args = [bufs["X_q"], bufs["codes"]] + ([bufs["bias"]] if "bias" in bufs else [])
    out = tvm.runtime.tensor(np.zeros(spec.out_shape, np.float32), dev)
    ex["main"](*[tvm.runtime.tensor(a, dev) for a in args], out)
    got = out.numpy()
    if ref is not None:
        assert torch.equal(torch.from_numpy(got), ref)
    else:
        assert np.array_equal(got.view(np.int32), _llvm_out(kind, spec, bufs).view(np.int32))
