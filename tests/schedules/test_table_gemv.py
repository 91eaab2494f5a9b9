"""Table GEMV kernel (schedules.table_gemv): bit-exact against the integer reference (chunk splits, all-zero
rows, saturated activations, 2- and 3-byte terms, int64 accumulators), the table pre-kernel equals its NumPy
twin, layers it cannot compute are refused with a reason, and the AVX2 / AVX-512 inner loop is vpshufb and
word adds without a multiply."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples

from passes.accumulator import plan_accumulator
from schedules import table_gemv as tg
from schedules.compute import DenseSpec
from shiftcomp.reference import shift_linear

HOST = "llvm"
ZNVER3 = {"kind": "llvm", "mcpu": "znver3"}
BASE_SHIFT = -4
# (K, N, bias): K around the 255-input chunk bound (one chunk, 254 + 1 padded, two uneven chunks, ...),
# N not a multiple of the 32 / 64 output lanes
SHAPES = [(20, 5, True), (255, 33, False), (256, 7, True), (511, 40, False), (600, 64, True), (1, 1, False),
          (1100, 3, True)]   # the last: int64 accumulators for top-level codes
CODE_MODES = ["mixed", "two_planes", "single_level", "zero_rows", "all_zero", "top_level", "window_tail"]
VARIANTS = ["byte", "nibble"]
ACT_MODES = ["random", "min", "max", "zero"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread for TVM here (its pool spin-waits between the tiny calls)."""
    tvm_threads = tvm.runtime.num_threads()
    pool = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if pool is not None:
        pool(1, 1)
    yield
    if pool is not None:
        pool(1, tvm_threads)


def _codes(rng: np.random.Generator, shape: tuple, mode: str) -> np.ndarray:
    """int8 codes in [-15, 15] whose smallest used magnitude is 1 (s0 then is the base shift)."""
    if mode == "single_level":
        c = rng.choice([-1, 0, 1], size=shape)
    elif mode == "all_zero":
        c = np.zeros(shape, np.int64)
    elif mode == "top_level":                 # every term x << 14: the widest bytes, the accumulator bound
        c = rng.choice([-15, 15], size=shape)
    elif mode == "window_tail":               # most weights in 7 levels, a few outside (the nibble tail)
        c = rng.integers(4, 11, size=shape) * rng.choice([-1, 1], size=shape)
        out = rng.random(shape) < 0.03
        c[out] = rng.choice([-15, -3, -1, 1, 2, 11, 15], size=int(out.sum()))
    else:
        hi = 8 if mode == "two_planes" else 15
        c = rng.integers(-hi, hi + 1, size=shape)
        if mode == "zero_rows":
            c[rng.random(shape[0]) < 0.5] = 0
    c = c.astype(np.int8)
    nz = np.flatnonzero(c)
    if nz.size and not np.any(np.abs(c.reshape(-1)[nz]) == 1):
        c.reshape(-1)[nz[0]] = np.sign(c.reshape(-1)[nz[0]])
    return c


def _acts(rng: np.random.Generator, k: int, mode: str) -> np.ndarray:
    if mode == "min":
        return np.full((1, k), -128, np.int64)
    if mode == "max":
        return np.full((1, k), 127, np.int64)
    if mode == "zero":
        return np.zeros((1, k), np.int64)
    return rng.integers(-128, 128, size=(1, k))


def _weights(codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.from_numpy(codes.astype(np.int64))
    return torch.where(c != 0, c.abs() - 1 + BASE_SHIFT, torch.zeros_like(c)), torch.sign(c)


@functools.cache
def _compiled(spec: DenseSpec, planes: int, variant: str = "byte"):
    """The compiled module per spec, variant and byte count (it does not depend on the weights otherwise)."""
    dummy = np.ones((spec.out_features, spec.in_features), np.int8)
    dummy[0, 0] = 15 if planes == 3 else 1
    return tg.build(spec, dummy, HOST, (3, 5), variant=variant).compile()


@pytest.mark.bitexact
@settings(max_examples=examples(250), deadline=None)
@given(st.sampled_from(SHAPES), st.sampled_from(CODE_MODES), st.sampled_from(ACT_MODES), st.sampled_from(VARIANTS),
       st.integers(0, 2**32 - 1))
def test_equals_reference(shape, code_mode, act_mode, variant, seed):
    K, N, has_bias = shape
    rng = np.random.default_rng(seed)
    codes = _codes(rng, (N, K), code_mode)
    shift, sign = _weights(codes)
    acc = plan_accumulator("t", shift.numpy(), sign.numpy(), (3, 5), BASE_SHIFT).dtype
    spec = DenseSpec(1, K, N, frac_bits=5, s0=BASE_SHIFT, acc_dtype=acc, has_bias=has_bias)
    x = _acts(rng, K, act_mode)
    bias = torch.from_numpy(rng.normal(size=N).astype(np.float32)) if has_bias else None
    ref = shift_linear(torch.from_numpy(x), shift, sign, 5, bias)
    k = tg.build(spec, codes, HOST, (3, 5), variant=variant)
    if variant == "byte":
        assert k.planes == (2 if np.abs(codes.astype(np.int32)).max(initial=0) <= 8 else 3)
    y = _compiled(spec, k.planes, variant)(x, k.weight_inputs, None if bias is None else bias.numpy())
    assert torch.equal(torch.from_numpy(y), ref.out), (spec, code_mode, act_mode, variant)


@pytest.mark.parametrize("K,planes", [(20, 2), (300, 3), (511, 3)])
def test_table_matches_its_numpy_twin(K, planes):
    spec = DenseSpec(1, K, 3, frac_bits=5, s0=BASE_SHIFT)
    k = tg.build(spec, np.full((3, K), 15 if planes == 3 else 1, np.int8), HOST, (3, 5), variant="byte")
    x = np.random.default_rng(K).integers(-128, 128, size=(1, K))
    x[0, :2] = (-128, 127)
    tbl = tvm.runtime.tensor(np.full(k.table_shape, 77, np.uint8))
    _compiled(spec, planes, "byte").module["table"](tvm.runtime.tensor(x.astype(np.int32)), tbl)
    kp = k.table_shape[0] // (16 * planes)
    assert kp % k.chunk == 0 and kp >= K
    assert np.array_equal(tbl.numpy(), tg.table_numpy(x, kp, planes).reshape(-1))


@pytest.mark.parametrize("K", [20, 511])
def test_nibble_table_matches_its_numpy_twin(K):
    spec = DenseSpec(1, K, 3, frac_bits=5, s0=BASE_SHIFT)
    k = tg.build(spec, np.ones((3, K), np.int8), HOST, (3, 5), variant="nibble")
    x = np.random.default_rng(K).integers(-128, 128, size=(1, K))
    x[0, :2] = (-128, 127)
    tbl = tvm.runtime.tensor(np.full(k.table_shape, 77, np.int16))
    _compiled(spec, 2, "nibble").module["table"](tvm.runtime.tensor(x.astype(np.int32)), tbl)
    assert np.array_equal(tbl.numpy(), tg.signed_table_numpy(x, k.table_shape[0] // 18))


def test_variant_choice_and_nibble_layout():
    rng = np.random.default_rng(0)
    window = _codes(rng, (40, 70), "window_tail")
    assert tg.choose_variant(window) == "nibble" and tg.choose_variant(_codes(rng, (40, 70), "mixed")) == "byte"
    assert tg.choose_variant(np.full((3, 4), -7, np.int8)) == "nibble"       # 4-bit codes: no tail at all
    w0, tail = tg.nibble_window(window)
    a = np.abs(window.astype(np.int32))
    assert w0 == 4 and tail == int(((a > 0) & ((a < 4) | (a > 10))).sum())
    spec = DenseSpec(1, 70, 40, frac_bits=5, s0=BASE_SHIFT)
    nib, ptr, term, base = tg.derive_nibble_inputs(spec, window, lanes=32)
    assert base.tolist() == [w0 - 1] and ptr[-1] == tail and term.size == max(tail, 1)
    assert nib.size == 2 * 32 * 70 // 2                                     # 2 blocks of 32 outputs, half a byte


def test_derive_and_refusals():
    rng = np.random.default_rng(0)
    spec = DenseSpec(1, 40, 9, frac_bits=5, s0=BASE_SHIFT)
    codes = _codes(rng, (9, 40), "mixed")
    k = tg.build(spec, codes, HOST, (3, 5))
    assert all(np.array_equal(a, b) for a, b in zip(k.derive(codes), k.weight_inputs))
    assert np.array_equal(k.weight_inputs[1], (codes < 0).sum(axis=1))
    # 16-bit activations, more than 15 levels, batch > 1, float activations, CUDA: refused with a reason
    assert "wider than 8 bits" in tg.applicable(spec, codes, HOST, (8, 8))
    assert "15 shift levels" in tg.applicable(spec, np.full((9, 40), 16, np.int8), HOST, (3, 5))
    assert "batch-1" in tg.applicable(DenseSpec(2, 40, 9, frac_bits=5, s0=BASE_SHIFT), codes, HOST, (3, 5))
    assert "float" in tg.applicable(spec, codes, HOST, None)
    assert "x86" in tg.applicable(spec, codes, "cuda", (3, 5))
    with pytest.raises(ValueError, match="wider than 8 bits"):
        tg.build(DenseSpec(1, 40, 9, frac_bits=8, s0=BASE_SHIFT), codes, HOST, (8, 8))
    with pytest.raises(ValueError, match="frac_bits"):
        tg.build(spec, codes, HOST, (4, 4))
    with pytest.raises(ValueError, match="codes have shape"):
        tg.build(spec, codes[:, :3], HOST, (3, 5))
    with pytest.raises(ValueError, match="unknown table GEMV variant"):
        tg.build(spec, codes, HOST, (3, 5), variant="word")


# ------------------------------------------------------------------------------------------------- asm
def _hot_block(asm: str, op: str) -> list[str]:
    """The basic block with the most instructions starting with ``op``."""
    blocks, cur = [], []
    for line in asm.splitlines():
        if line and not line.startswith(("\t", " ")) and line.rstrip().endswith(":"):
            blocks.append(cur)
            cur = []
        cur.append(line.strip())
    blocks.append(cur)
    return max(blocks, key=lambda b: sum(l.startswith(op) for l in b))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mcpu,reg", [("znver3", "%ymm"), ("sapphirerapids", "%zmm")])
def test_x86_inner_loop_is_shuffles_and_adds(mcpu, reg, variant):
    target = {"kind": "llvm", "mcpu": mcpu}
    spec = DenseSpec(1, 512, 128, frac_bits=5, s0=BASE_SHIFT, has_bias=True)
    k = tg.build(spec, _codes(np.random.default_rng(1), (128, 512), "mixed"), target, (3, 5), variant=variant)
    assert k.lanes == (64 if reg == "%zmm" else 32) and k.planes == (3 if variant == "byte" else 2)
    asm = tvm.tirx.build(k.main.with_attr("global_symbol", "main"), target=k.target).inspect_source("asm")
    hot = _hot_block(asm, "vpshufb")
    ops = [l.split()[0] for l in hot if l.startswith("v")]
    assert ops.count("vpshufb") >= 3 and all(reg in l for l in hot if l.startswith("vpshufb")), hot
    # per plane: the looked-up bytes as words into the wrapped word sum and, shifted, into the high-byte sum
    assert ops.count("vpaddw") >= 6 and ops.count("vpsrlw") >= 3, hot
    assert not any(l.startswith(("imul", "vpmull", "mul", "vpmadd")) for l in hot), hot
