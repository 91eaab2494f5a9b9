"""CUDA sum-then-shift kernels (schedules.sum_then_shift_cuda) without a GPU.

* The kernel's loops left serial (``gpu=False``) and run by LLVM equal the integer reference bit for bit over
  drawn conv geometries (stride, padding, dilation, groups, depthwise) and batched dense layers, with
  all-zero outputs, single-level layers, saturated activations, 16-bit formats and int64 accumulators.
* The CUDA C of the thread-bound kernel, compiled by g++ with thread shims under UBSan and run over its launch
  grid, equals the reference too; it has no multiply on data, nor has nvcc's PTX (taint pass).
* On a machine with a GPU the kernel runs there (``@pytest.mark.gpu``; skipped otherwise).
"""
from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
import tvm
from cuda_support import (CUDA, HAS_GXX, HAS_NVCC, data_statements_with_star, emulate_cuda, has_gpu, nvcc_ptx,
                          ptx_data_multiplies)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples

from passes.accumulator import plan_accumulator
from passes.sum_then_shift_family import _with_root_block
from schedules import sum_then_shift_cuda as stc
from schedules import sum_then_shift_layout as layout
from schedules.compute import Conv2dSpec, DenseSpec
from schedules.target import resolve_target
from shiftcomp import reference

S0 = -6
CODE_MODES = ["mixed", "zero_rows", "single_level", "all_zero", "top_level"]
ACT_MODES = ["random", "min", "max"]


def _codes(rng: np.random.Generator, shape: tuple, mode: str) -> np.ndarray:
    if mode == "single_level":
        c = rng.choice([-1, 0, 1], size=shape)
    elif mode == "all_zero":
        c = np.zeros(shape, np.int64)
    elif mode == "top_level":
        c = rng.choice([-12, 12], size=shape)
    else:
        c = rng.integers(-9, 10, size=shape)
        if mode == "zero_rows":
            c[rng.random(shape[0]) < 0.5] = 0
    return c.astype(np.int8)


def _acts(rng: np.random.Generator, shape: tuple, mode: str, bits: int) -> np.ndarray:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if mode == "min":
        return np.full(shape, lo, np.int32)
    if mode == "max":
        return np.full(shape, hi, np.int32)
    return rng.integers(lo, hi + 1, size=shape).astype(np.int32)


def _weights(codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.from_numpy(codes.astype(np.int64))
    return torch.where(c != 0, c.abs() - 1 + S0, torch.zeros_like(c)), torch.sign(c)


def _case(kind: str, geometry: tuple, code_mode: str, act_mode: str, act_bits: tuple, seed: int):
    """(spec, codes, x, bias, reference out)."""
    rng = np.random.default_rng(seed)
    if kind == "dense":
        m, k, n, has_bias = geometry
        wshape = (n, k)
    else:
        nb, c, h, w, o, kh, kw, stride, padding, dilation, groups, has_bias = geometry
        wshape = (o, c // groups, kh, kw)
    codes = _codes(rng, wshape, code_mode)
    shift, sign = _weights(codes)
    acc = plan_accumulator("t", shift.numpy(), sign.numpy(), act_bits, S0).dtype
    f = act_bits[1]
    if kind == "dense":
        spec = DenseSpec(m, k, n, frac_bits=f, s0=S0, acc_dtype=acc, has_bias=has_bias)
    else:
        spec = Conv2dSpec(nb, c, h, w, o, kh, kw, stride, padding, dilation, groups, f, S0, acc, has_bias)
    x = _acts(rng, spec.x_shape, act_mode, sum(act_bits))
    bias = rng.normal(size=wshape[0]).astype(np.float32) if has_bias else None
    bt = None if bias is None else torch.from_numpy(bias)
    xt = torch.from_numpy(x.astype(np.int64))
    ref = (reference.shift_linear(xt, shift, sign, f, bt) if kind == "dense" else
           reference.shift_conv2d(xt, shift, sign, f, bt, spec.stride, spec.padding, spec.dilation,
                                  spec.groups)).out
    return spec, codes, x, bias, ref


@functools.cache
def _cpu_module(kind: str, spec, lane: str):
    """The serial loops, built for this CPU (one module per spec: the plan lengths are symbolic)."""
    prim, _, _ = stc._primfunc(kind, spec, lane, False)
    return tvm.tirx.build(prim.with_attr("global_symbol", "main"), target="llvm")


def _run_cpu(k, x, bias) -> np.ndarray:
    out = tvm.runtime.tensor(np.zeros(k.spec.out_shape, np.float32))
    args = [tvm.runtime.tensor(x)] + [tvm.runtime.tensor(w) for w in k.weight_inputs]
    if bias is not None:
        args.append(tvm.runtime.tensor(bias))
    _cpu_module(k.kind, k.spec, k.lane_dtype)["main"](*args, out)
    return out.numpy()


# (N, C, H, W, O, KH, KW, stride, padding (t, l, b, r), dilation, groups, bias)
CONV = [(1, 3, 8, 8, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
        (2, 4, 5, 6, 20, 3, 3, (1, 2), (1, 0, 2, 1), (1, 1), 2, True),     # groups, asymmetric padding
        (1, 6, 7, 7, 6, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 6, False),     # depthwise, stride 2
        (1, 4, 9, 9, 3, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1, True),      # dilation
        (1, 8, 4, 4, 16, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1, True),     # 1x1 stride 2
        (1, 2, 20, 20, 3, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 1, False)]   # 400 pixels: 2 blocks of 256
DENSE = [(3, 37, 21, True), (33, 70, 5, False)]


@pytest.mark.bitexact
@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from([("conv2d", g) for g in CONV] + [("dense", g) for g in DENSE]),
       st.sampled_from(CODE_MODES), st.sampled_from(ACT_MODES), st.sampled_from([(3, 5), (8, 8)]),
       st.integers(0, 2 ** 32 - 1))
def test_serial_loops_equal_reference(case, code_mode, act_mode, act_bits, seed):
    kind, geometry = case
    spec, codes, x, bias, ref = _case(kind, geometry, code_mode, act_mode, act_bits, seed)
    k = stc.build(kind, spec, codes, CUDA, act_bits, gpu=False)
    assert k.lane_dtype == "int32"
    assert torch.equal(torch.from_numpy(_run_cpu(k, x, bias)), ref), (spec, code_mode, act_mode, act_bits)


def test_plan_terms_and_refusals():
    spec, codes, *_ = _case("conv2d", CONV[1], "mixed", "random", (3, 5), 0)
    k = stc.build("conv2d", spec, codes, CUDA, (3, 5))
    assert all(np.array_equal(a, b) for a, b in zip(k.derive(codes), k.weight_inputs))
    seg_ptr, level, npos, tptr, term = k.weight_inputs
    assert seg_ptr.size == spec.out_channels + 1 and tptr[-1] == term.size == np.count_nonzero(codes)
    # every term names its input channel and tap: decoding them rebuilds the codes' nonzero pattern
    c, kh, kw = term >> 16, (term >> 8) & 255, term & 255
    o = np.repeat(np.repeat(np.arange(spec.out_channels), np.diff(seg_ptr)), np.diff(tptr))
    rebuilt = np.zeros(codes.shape, bool)
    rebuilt[o, c, kh, kw] = True
    assert np.array_equal(rebuilt, codes != 0)
    assert k.threads == 32 and k.blocks == 2 * 20                  # 3x6 outputs: one warp-sized block each
    assert "CUDA target" in stc.applicable("conv2d", spec, (3, 5), "llvm")
    assert "float" in stc.applicable("conv2d", spec, None, CUDA)
    assert "batch-1" in stc.applicable("dense", DenseSpec(1, 8, 4, 5, S0), (3, 5), CUDA)
    with pytest.raises(ValueError, match="codes have shape"):
        stc.build("conv2d", spec, codes[:, :1], CUDA, (3, 5))
    with pytest.raises(ValueError, match="accumulator bound"):
        stc.build("conv2d", Conv2dSpec(1, 64, 4, 4, 2, 3, 3, 1, 1, 1, 1, 5, S0, "int32", False),
                  np.full((2, 64, 3, 3), 40, np.int8), CUDA, (3, 5))
    assert layout.cuda_lane_dtype(2 ** 31) == "int64" and layout.cuda_lane_dtype(2 ** 15) == "int32"


# ------------------------------------------------------------------------------------------ CUDA C
EMULATED = [("conv2d", CONV[1]), ("conv2d", CONV[2]), ("conv2d", CONV[5]), ("dense", DENSE[1])]


@functools.cache
def _cuda(kind: str, spec) -> tuple:
    """(root-blocked PrimFunc, CUDA C source) of the thread-bound kernel (weights do not change it)."""
    wshape = (spec.out_features, spec.in_features) if kind == "dense" else (
        spec.out_channels, spec.group_in, spec.kernel_h, spec.kernel_w)
    k = stc.build(kind, spec, np.ones(wshape, np.int8), CUDA, (3, 5))
    prim = _with_root_block(k.main).with_attr("global_symbol", "main")
    return prim, tvm.compile(prim, CUDA).mod.imports[0].inspect_source()


@pytest.mark.parametrize("kind,geometry", EMULATED)
def test_cuda_source_is_shift_and_add(kind, geometry):
    spec, *_ = _case(kind, geometry, "mixed", "random", (3, 5), 0)
    _, src = _cuda(kind, spec)
    assert "__global__" in src and "<<" in src
    assert data_statements_with_star(src) == []


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not on PATH")
def test_ptx_has_no_multiply_on_data():
    """Taint from the activations (parameter 0) only: the plan's offsets feed index math (``c * H * W``)."""
    spec, *_ = _case("conv2d", CONV[1], "mixed", "random", (3, 5), 0)
    ptx = nvcc_ptx(_cuda("conv2d", spec)[1])
    int_muls, float_muls = ptx_data_multiplies(ptx, data_params=(0,))
    assert int_muls == [], int_muls
    for op, ops in float_muls:         # only the per-output scale: a multiply by an immediate float
        assert any(re.fullmatch(r"0[fF][0-9A-Fa-f]{8}", o) for o in ops[1:]), (op, ops)
    # the check sees data: every loaded value (plan included) tainted, the index math is flagged
    assert ptx_data_multiplies(ptx)[0]


@pytest.mark.bitexact
@pytest.mark.skipif(not HAS_GXX, reason="g++ not on PATH")
@pytest.mark.parametrize("kind,geometry", EMULATED)
def test_cuda_source_runs_correctly_on_cpu(kind, geometry):
    for seed, (codes_mode, act_mode) in enumerate([("mixed", "random"), ("zero_rows", "min")]):
        spec, codes, x, bias, ref = _case(kind, geometry, codes_mode, act_mode, (3, 5), seed)
        prim, src = _cuda(kind, spec)
        k = stc.build(kind, spec, codes, CUDA, (3, 5))
        names = ["X", "seg_ptr", "seg_level", "seg_npos", "seg_tptr", "term"]
        bufs = dict(zip(names, (x, *k.weight_inputs)))
        bufs["out"] = np.zeros(spec.out_shape, np.float32)
        if bias is not None:
            bufs["bias"] = bias
        got = emulate_cuda(src, prim, bufs)["out"]
        assert torch.equal(torch.from_numpy(got), ref), (kind, geometry, seed)


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu(), reason="no CUDA GPU (tvm.cuda(0).exist is False)")
@pytest.mark.parametrize("kind,geometry", EMULATED)
def test_cuda_kernel_on_gpu(kind, geometry):
    target = resolve_target("cuda")
    dev = tvm.cuda(0)
    spec, codes, x, bias, ref = _case(kind, geometry, "mixed", "random", (3, 5), 0)
    k = stc.build(kind, spec, codes, target, (3, 5))
    ex = tvm.compile(_with_root_block(k.main).with_attr("global_symbol", "main"), target)
    args = [tvm.runtime.tensor(a, dev) for a in (x, *k.weight_inputs)]
    if bias is not None:
        args.append(tvm.runtime.tensor(bias, dev))
    out = tvm.runtime.tensor(np.zeros(spec.out_shape, np.float32), dev)
    ex["main"](*args, out)
    assert torch.equal(torch.from_numpy(out.numpy()), ref)
