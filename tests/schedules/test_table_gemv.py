"""Table GEMV kernel (schedules.table_gemv): bit-exact against the integer reference (chunk splits, all-zero
rows, saturated activations, 2- and 3-byte terms, int64 accumulators, scalar and gathered tails), the table
pre-kernels equal their NumPy twins, layers it cannot compute are refused with a reason, the AVX2 / AVX-512
inner loop is table lookups and word adds, the tail a gather, and no kernel has a multiply."""
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
from schedules.sum_then_shift import vector_bits
from schedules.target import resolve_target
from shiftcomp.reference import shift_linear

HOST = "llvm"
#: AVX2 code without AVX-512 that this machine can run (every x86 CPU the project targets has AVX2)
HASWELL = {"kind": "llvm", "mcpu": "haswell"}
BASE_SHIFT = -4
# (K, N, bias): K around the 255-input chunk bound (one chunk, 254 + 1 padded, two uneven chunks, ...),
# N not a multiple of the 32 / 64 output lanes
SHAPES = [(20, 5, True), (255, 33, False), (256, 7, True), (511, 40, False), (600, 64, True), (1, 1, False),
          (1100, 3, True)]   # the last: int64 accumulators for top-level codes
CODE_MODES = ["mixed", "two_planes", "single_level", "zero_rows", "all_zero", "top_level", "window_tail"]
VARIANTS = list(tg.VARIANTS)
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


@pytest.mark.bitexact
@pytest.mark.parametrize("variant", VARIANTS)
def test_avx2_code_equals_reference(variant):
    """The 256-bit build (32 lanes, 8-lane gathers) run on this machine."""
    if vector_bits(resolve_target(HOST)) < 256:
        pytest.skip("this CPU has no AVX2")
    rng = np.random.default_rng(11)
    for K, N, has_bias in SHAPES[:5]:
        for mode in ("window_tail", "mixed"):
            codes = _codes(rng, (N, K), mode)
            shift, sign = _weights(codes)
            acc = plan_accumulator("t", shift.numpy(), sign.numpy(), (3, 5), BASE_SHIFT).dtype
            spec = DenseSpec(1, K, N, frac_bits=5, s0=BASE_SHIFT, acc_dtype=acc, has_bias=has_bias)
            x = _acts(rng, K, "random")
            bias = torch.from_numpy(rng.normal(size=N).astype(np.float32)) if has_bias else None
            ref = shift_linear(torch.from_numpy(x), shift, sign, 5, bias)
            k = tg.build(spec, codes, HASWELL, (3, 5), variant=variant)
            assert k.lanes == 32
            y = k(x, None if bias is None else bias.numpy())
            assert torch.equal(torch.from_numpy(y), ref.out), (spec, mode, variant)


def _pre_kernel_output(K: int, planes: int, variant: str) -> tuple:
    """``(kernel, x, tables)``: the variant's pre-kernel run on K activations (the first two saturated) into
    a buffer filled with 77 (so that an unwritten element shows)."""
    spec = DenseSpec(1, K, 3, frac_bits=5, s0=BASE_SHIFT)
    k = tg.build(spec, np.full((3, K), 15 if planes == 3 else 1, np.int8), HOST, (3, 5), variant=variant)
    x = np.random.default_rng(K).integers(-128, 128, size=(1, K))
    x[0, :2] = (-128, 127)
    tbl = tvm.runtime.tensor(np.full(k.table_shape, 77, k.table_dtype))
    _compiled(spec, planes, variant).module["table"](tvm.runtime.tensor(x.astype(np.int32)), tbl)
    return k, x, tbl.numpy()


@pytest.mark.parametrize("K,planes", [(20, 2), (300, 3), (511, 3)])
def test_table_matches_its_numpy_twin(K, planes):
    k, x, tbl = _pre_kernel_output(K, planes, "byte")
    kp = k.table_shape[0] // (16 * planes)
    assert kp % k.chunk == 0 and kp >= K
    assert np.array_equal(tbl, tg.table_numpy(x, kp, planes).reshape(-1))


@pytest.mark.parametrize("K", [20, 511])
def test_nibble_table_matches_its_numpy_twin(K):
    k, x, tbl = _pre_kernel_output(K, 2, "nibble")
    assert np.array_equal(tbl, tg.signed_table_numpy(x, k.table_shape[0] // 18))


@pytest.mark.parametrize("K", [20, 511])
def test_gather_table_matches_its_numpy_twin(K):
    k, x, tbl = _pre_kernel_output(K, 2, "nibble_gather")
    kp = (k.table_shape[0] - 4) // 20
    assert np.array_equal(tbl, tg.gather_table_numpy(x, kp))
    pm = tbl[kp * 16:].view(np.int32)                                        # +-x as int32, then the zero
    assert pm[:2 * K:2].tolist() == x[0].tolist() and pm[1:2 * K:2].tolist() == (-x[0]).tolist()
    assert not pm[2 * K:].any()


def test_gather_tail_layout():
    """Every output's tail terms sit in its lane of its group's columns; the rest of a column is padding."""
    rng = np.random.default_rng(5)
    codes = _codes(rng, (150, 90), "window_tail")
    spec = DenseSpec(1, 90, 150, frac_bits=5, s0=BASE_SHIFT)
    for lanes in (32, 64):
        nib, ptr, term, base = tg.derive_gather_tail_inputs(spec, codes, lanes=lanes)
        snib, sptr, sterm, sbase = tg.derive_nibble_inputs(spec, codes, lanes=lanes)
        assert np.array_equal(nib, snib) and np.array_equal(base, sbase)
        g = lanes // 4
        kp = int(np.prod(tg.nibble_chunks(90)))
        assert ptr.size == -(-150 // lanes) * lanes // g + 1
        for o in range(150):
            mine = term[ptr[o // g] * g:ptr[o // g + 1] * g][o % g::g]
            assert sorted(mine[mine != 2 * kp].tolist()) == sorted(sterm[sptr[o]:sptr[o + 1]].tolist())
            assert (mine == 2 * kp).sum() == ptr[o // g + 1] - ptr[o // g] - (sptr[o + 1] - sptr[o])
        assert ((term != 2 * kp).sum()) == sptr[-1]
        # a column per term of the group's longest output
        longest = np.diff(sptr)[:150]
        full = np.zeros(ptr.size - 1, np.int64)
        np.maximum.at(full, np.arange(150) // g, longest)
        assert np.array_equal(np.diff(ptr), full)


def test_gather_tail_falls_back_when_int32_could_overflow():
    # one output with 2**17 tail terms at the top level: 2**17 * 128 << 14 = 2**38 does not fit int32 lanes
    codes = np.full((2, 2 ** 17), 4, np.int8)
    codes[0, : 2 ** 17 // 100] = 15
    assert tg.choose_variant(codes) == "nibble"
    spec = DenseSpec(1, 2 ** 17, 2, frac_bits=5, s0=BASE_SHIFT, acc_dtype="int64")
    with pytest.raises(ValueError, match="int32 lanes"):
        tg.build(spec, codes, HOST, (3, 5), variant="nibble_gather")


def test_variant_choice_and_nibble_layout():
    rng = np.random.default_rng(0)
    window = _codes(rng, (40, 70), "window_tail")
    assert tg.choose_variant(window) == "nibble_gather"
    assert tg.choose_variant(_codes(rng, (40, 70), "mixed")) == "byte"
    assert tg.choose_variant(np.full((3, 4), -7, np.int8)) == "nibble_gather"   # 4-bit codes: no tail at all
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


#: (mcpu, vector register, lookup of the nibble variants): vpermb where AVX-512 VBMI has it
ASM_TARGETS = [("znver3", "%ymm", "vpshufb"), ("skylake-avx512", "%zmm", "vpshufb"),
               ("sapphirerapids", "%zmm", "vpermb")]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mcpu,reg,nibble_lookup", ASM_TARGETS)
def test_x86_inner_loop_is_shuffles_and_adds(mcpu, reg, nibble_lookup, variant):
    target = {"kind": "llvm", "mcpu": mcpu}
    spec = DenseSpec(1, 512, 128, frac_bits=5, s0=BASE_SHIFT, has_bias=True)
    k = tg.build(spec, _codes(np.random.default_rng(1), (128, 512), "mixed"), target, (3, 5), variant=variant)
    assert k.lanes == (64 if reg == "%zmm" else 32) and k.planes == (3 if variant == "byte" else 2)
    asm = tvm.tirx.build(k.main.with_attr("global_symbol", "main"), target=k.target).inspect_source("asm")
    lookup = "vpshufb" if variant == "byte" else nibble_lookup
    hot = _hot_block(asm, lookup)
    ops = [l.split()[0] for l in hot if l.startswith("v")]
    assert ops.count(lookup) >= 3 and all(reg in l for l in hot if l.startswith(lookup)), hot
    # per plane: the looked-up bytes as words into the wrapped word sum and, shifted, into the high-byte sum
    assert ops.count("vpaddw") >= 6 and ops.count("vpsrlw") >= 3, hot
    if lookup == "vpermb":       # 6 index bits: the nibbles need no mask
        assert "vpand" not in ops and "vpandq" not in ops and "vpandd" not in ops, hot
    assert not any(l.startswith(("imul", "vpmull", "mul", "vpmadd")) for l in hot), hot
    if variant == "nibble_gather":                   # the tail: a gather and a per-lane shift per column
        tail = _hot_block(asm, "vpgatherdd")
        assert any(l.startswith("vpgatherdd") and reg in l for l in tail) and any(
            l.startswith("vpsllvd") for l in tail), tail


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mcpu", ["znver3", "sapphirerapids"])
def test_no_vector_multiply(mcpu, variant):
    """The kernel never multiplies data (scalar imul on loop indices is address arithmetic). The O(K) table
    pre-kernel shifts each input by 16 constant amounts; with 512-bit vectors it calls vpsllvd, which stays a
    shift. On AVX2 LLVM folds the 256-bit intrinsic back into a shift by constants and may emit vpmullw by
    powers of two there (see the module doc), so only the kernel is checked."""
    target = {"kind": "llvm", "mcpu": mcpu}
    spec = DenseSpec(1, 300, 70, frac_bits=5, s0=BASE_SHIFT, has_bias=True, acc_dtype="int64")
    k = tg.build(spec, _codes(np.random.default_rng(2), (70, 300), "window_tail"), target, (3, 5), variant=variant)
    for f in (k.table, k.main) if mcpu == "sapphirerapids" else (k.main,):
        asm = tvm.tirx.build(f.with_attr("global_symbol", "f"), target=k.target).inspect_source("asm")
        vmul = [l.strip() for l in asm.splitlines() if l.strip().startswith(("vpmul", "vpmadd", "vmul", "vpdp"))]
        assert not vmul, vmul
