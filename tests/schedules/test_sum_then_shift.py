"""Sum-then-shift kernels (schedules.sum_then_shift): bit-exact against the integer reference, the inner loop
is vector adds on AVX2 / AVX-512 / NEON, and the TVM miscompile the kernels work around is still there."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples
from tvm.script import tirx as T

from passes.accumulator import plan_accumulator
from schedules import sum_then_shift as sts
from schedules.compute import Conv2dSpec, DenseSpec
from shiftcomp.reference import shift_conv2d, shift_linear

HOST = "llvm"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread for torch and TVM here: their thread pools spin-wait and slow each other down 10-100x
    when calls alternate (the kernels are tiny)."""
    torch_threads, tvm_threads = torch.get_num_threads(), tvm.runtime.num_threads()
    pool = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    torch.set_num_threads(1)
    if pool is not None:
        pool(1, 1)
    yield
    torch.set_num_threads(torch_threads)
    if pool is not None:
        pool(1, tvm_threads)

Q8, Q16 = (3, 5), (8, 8)     # 8-bit (int16 segments) and 16-bit (int32 segments) activation formats
# ((C, O, H, W, KH, KW, stride, padding, dilation, groups, bias), format): small, every geometry feature.
# One compiled kernel per (geometry, format, accumulator dtype), so 16-bit formats get a few geometries.
CONVS = [
    ((4, 6, 7, 9, 3, 3, 1, 1, 1, 1, True), Q8),
    ((4, 6, 7, 9, 3, 3, 1, 1, 1, 1, True), Q16),
    ((3, 5, 9, 8, 3, 3, 2, (1, 0, 2, 1), 1, 1, False), Q8),
    ((4, 4, 10, 9, 3, 2, (2, 1), 2, (2, 1), 1, True), Q8),
    ((6, 4, 8, 8, 3, 3, 1, 1, 1, 2, False), Q8),
    ((6, 4, 8, 8, 3, 3, 1, 1, 1, 2, False), Q16),
    ((8, 8, 6, 7, 3, 3, 1, 1, 1, 8, True), Q8),          # depthwise
    ((8, 8, 6, 7, 3, 3, 1, 1, 1, 8, True), Q16),
    ((6, 6, 12, 11, 3, 3, 2, 1, 1, 6, False), Q8),       # depthwise, stride 2
    ((32, 3, 4, 5, 3, 3, 1, 1, 1, 1, True), Q8),         # 288 terms per channel: int16 segments split at 255
    ((5, 7, 5, 5, 1, 1, 1, 0, 1, 1, False), Q8),
    ((3, 4, 6, 28, 3, 3, 1, 1, 1, 1, True), Q8),         # halo layout: rows of 32 = 28 + 2 + garbage
    ((4, 5, 9, 57, 3, 3, 2, 1, 1, 1, False), Q8),        # halo layout, stride 2: one copy per phase
    ((3, 4, 5, 15, 3, 3, 1, 1, 1, 1, False), Q8),        # tap copies, rows padded 15 -> 16
    ((4, 4, 7, 57, 3, 3, 2, 1, 1, 4, True), Q8),         # depthwise, halo layout, stride 2
    ((8, 6, 4, 4, 3, 3, 1, 1, 1, 1, True), Q8),          # 16 pixels: 16-lane vectors on AVX-512 too
    ((8, 4, 2, 3, 3, 3, 1, 1, 1, 1, False), Q8),         # 6 pixels: 8-lane vectors
]
DENSES = [((3, 20, 5, True), Q8), ((17, 300, 6, False), Q8), ((2, 7, 33, True), Q8),   # (M, K, N, bias)
          ((3, 20, 5, True), Q16)]
CODE_MODES = ["mixed", "single_level", "zero_channels", "all_zero", "long_runs"]
ACT_MODES = ["random", "min", "max", "zero"]
BASE_SHIFT = -4   # the layer's s0 (codes always use level 0 when they use any)


def _codes(rng: np.random.Generator, shape: tuple, mode: str, max_level: int) -> np.ndarray:
    """int8 codes whose smallest used level is 0 (so s0 only depends on the base shift)."""
    if mode == "single_level":
        c = rng.choice([-1, 0, 1], size=shape)
    elif mode == "long_runs":                  # one sign, one level: segments reach the capacity
        c = np.ones(shape, np.int64)
        c[rng.random(shape) < 0.05] = 0
    elif mode == "all_zero":
        c = np.zeros(shape, np.int64)
    else:
        c = rng.integers(-(max_level + 1), max_level + 2, size=shape)
        if mode == "zero_channels":
            c[rng.random(shape[0]) < 0.5] = 0
    c = c.astype(np.int8)
    nz = np.flatnonzero(c)
    if nz.size and not np.any(np.abs(c.reshape(-1)[nz]) == 1):
        c.reshape(-1)[nz[0]] = np.sign(c.reshape(-1)[nz[0]])
    return c


def _acts(rng: np.random.Generator, shape: tuple, mode: str, act_bits: tuple) -> np.ndarray:
    a = 2 ** (sum(act_bits) - 1)
    if mode == "min":
        return np.full(shape, -a, np.int64)
    if mode == "max":
        return np.full(shape, a - 1, np.int64)
    if mode == "zero":
        return np.zeros(shape, np.int64)
    return rng.integers(-a, a, size=shape)


def _weights(codes: np.ndarray, base: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.from_numpy(codes.astype(np.int64))
    return torch.where(c != 0, c.abs() - 1 + base, torch.zeros_like(c)), torch.sign(c)


@functools.lru_cache(maxsize=None)
def _compiled(kind: str, spec, act_bits: tuple, k_tiles=None, block_vectors=None, taps=None):
    """Compiled pack + kernel per spec (the module does not depend on the weights)."""
    dummy = np.ones(((spec.out_channels, spec.group_in, spec.kernel_h, spec.kernel_w) if kind == "conv2d"
                     else (spec.out_features, spec.in_features)), np.int8)
    return sts.build(kind, spec, dummy, HOST, act_bits, k_tiles=k_tiles, block_vectors=block_vectors,
                     taps=taps).compile()


def _check(kind: str, spec, codes: np.ndarray, x: np.ndarray, bias, act_bits, ref, k_tiles=None,
           block_vectors=None, taps=None) -> None:
    k = sts.build(kind, spec, codes, HOST, act_bits, k_tiles=k_tiles, block_vectors=block_vectors, taps=taps)
    if k.kind != "depthwise":             # narrow blocks: runs padded to TERM_MULTIPLE terms
        narrow = k.block <= sts.PAD_MAX_VECTORS * k.vector_lanes
        assert k.term_multiple == (sts.TERM_MULTIPLE if narrow else 1)
        assert not (k.weight_inputs[2] % k.term_multiple).any()
    y = _compiled(kind, spec, act_bits, k_tiles, block_vectors, taps)(x, k.weight_inputs,
                                                                     None if bias is None else bias.numpy())
    assert torch.equal(torch.from_numpy(y), ref.out), (kind, spec, k_tiles, block_vectors, taps)


@pytest.mark.bitexact
@settings(max_examples=examples(450), deadline=None)
@given(st.sampled_from(CONVS), st.sampled_from(CODE_MODES), st.sampled_from(ACT_MODES), st.integers(0, 2**32 - 1))
def test_conv2d_equals_reference(case, code_mode, act_mode, seed):
    _check_conv_case(case, code_mode, act_mode, seed)


#: conv cases with at least two input channels per group and not depthwise: they can be tiled
TILEABLE = [c for c in CONVS if c[0][0] // c[0][9] >= 2 and not (c[0][9] == c[0][0] == c[0][1])]


@pytest.mark.bitexact
@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from(TILEABLE), st.sampled_from([2, 3, 4]), st.sampled_from(CODE_MODES), st.sampled_from(ACT_MODES),
       st.integers(0, 2**32 - 1))
def test_conv2d_with_input_channel_tiles_equals_reference(case, k_tiles, code_mode, act_mode, seed):
    """Forced input-channel tiles (accumulators parked between tiles) give the reference's bits."""
    _check_conv_case(case, code_mode, act_mode, seed, k_tiles)


@pytest.mark.bitexact
@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from(CONVS), st.sampled_from(CODE_MODES), st.sampled_from(ACT_MODES), st.integers(0, 2**32 - 1))
def test_one_vector_blocks_with_padded_runs_equal_reference(case, code_mode, act_mode, seed):
    """Forced one-vector blocks: runs padded to TERM_MULTIPLE terms that read the zero tail (a whole image
    of zeros when the image spans several blocks)."""
    _check_conv_case(case, code_mode, act_mode, seed, block_vectors=1)


@pytest.mark.bitexact
@settings(max_examples=examples(60), deadline=None)
@given(st.sampled_from(CONVS), st.sampled_from(CODE_MODES), st.sampled_from(ACT_MODES), st.integers(0, 2**32 - 1))
def test_seven_vector_blocks_equal_reference(case, code_mode, act_mode, seed):
    """Blocks of up to seven vectors, what an AVX-512 target gets for a whole image of 5 to 7 vectors
    (``WHOLE_IMAGE_VECTORS``); on this host too, whatever its vector width."""
    _check_conv_case(case, code_mode, act_mode, seed, block_vectors=7)


def test_whole_image_blocks_on_32_register_targets():
    """On AVX-512, an image of 5 to 7 vectors is one block (no padded vector); AVX2, images that blocks of
    BLOCK_VECTORS divide, and int64 accumulators of int16 sums keep blocks of BLOCK_VECTORS."""
    def block(hw, cpu, acc="int32"):
        spec = Conv2dSpec(1, 16, hw, hw, 8, 3, 3, padding=1, frac_bits=5, s0=-4, acc_dtype=acc)
        k = sts.build("conv2d", spec, np.ones((8, 16, 3, 3), np.int8), {"kind": "llvm", "mcpu": cpu}, (3, 5))
        return k.block // k.vector_lanes, k.vector_lanes
    assert sts.WHOLE_IMAGE_VECTORS == 7
    assert block(14, "sapphirerapids") == (7, 32)        # 14 rows of 16: 7 vectors, not 2 blocks of 4
    assert block(14, "znver4") == (7, 32)
    assert block(16, "sapphirerapids") == (4, 32)        # 8 vectors: two full blocks
    assert block(14, "sapphirerapids", "int64") == (4, 32)
    assert block(14, "znver3") == (4, 16)


#: conv cases whose rows can carry the halo (padded rows of at most 1/6 garbage): both layouts apply
HALO_ELIGIBLE = [c for c in CONVS if c[0][3] in (28, 57) and c[0][9] == 1]


@pytest.mark.bitexact
@settings(max_examples=examples(120), deadline=None)
@given(st.sampled_from(HALO_ELIGIBLE), st.booleans(), st.sampled_from([None, 2]), st.sampled_from(CODE_MODES),
       st.sampled_from(ACT_MODES), st.integers(0, 2**32 - 1))
def test_both_conv_layouts_equal_reference(case, taps, k_tiles, code_mode, act_mode, seed):
    """Aligned tap copies (the default for 512-bit vectors) and the halo layout (narrower vectors) give the
    reference's bits on any host, tiled or not."""
    _check_conv_case(case, code_mode, act_mode, seed, k_tiles, taps=taps)


def _check_conv_case(case, code_mode: str, act_mode: str, seed: int, k_tiles=None, block_vectors=None,
                     taps=None) -> None:
    (C, O, H, W, KH, KW, stride, padding, dilation, groups, has_bias), act_bits = case
    rng = np.random.default_rng(seed)
    max_level = 6 if act_bits == (3, 5) else 14      # 16-bit activations at level 14: int64 accumulators
    codes = _codes(rng, (O, C // groups, KH, KW), code_mode, max_level)
    shift, sign = _weights(codes, BASE_SHIFT)
    # an all-zero layer has reference s0 = 0; its output (0 * scale + bias) does not depend on s0
    s0 = BASE_SHIFT
    acc = plan_accumulator("t", shift.numpy(), sign.numpy(), act_bits, s0).dtype
    spec = Conv2dSpec(1, C, H, W, O, KH, KW, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      frac_bits=act_bits[1], s0=s0, acc_dtype=acc, has_bias=has_bias)
    x = _acts(rng, spec.x_shape, act_mode, act_bits)
    bias = torch.from_numpy(rng.normal(size=O).astype(np.float32)) if has_bias else None
    ref = shift_conv2d(torch.from_numpy(x), shift, sign, act_bits[1], bias, stride, padding, dilation, groups)
    _check("conv2d", spec, codes, x, bias, act_bits, ref, k_tiles, block_vectors, taps)


@pytest.mark.bitexact
@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(DENSES), st.sampled_from(CODE_MODES), st.sampled_from(ACT_MODES), st.integers(0, 2**32 - 1))
def test_dense_equals_reference(case, code_mode, act_mode, seed):
    (M, K, N, has_bias), act_bits = case
    rng = np.random.default_rng(seed)
    codes = _codes(rng, (N, K), code_mode, 6 if act_bits == (3, 5) else 14)
    shift, sign = _weights(codes, BASE_SHIFT)
    # an all-zero layer has reference s0 = 0; its output (0 * scale + bias) does not depend on s0
    s0 = BASE_SHIFT
    acc = plan_accumulator("t", shift.numpy(), sign.numpy(), act_bits, s0).dtype
    spec = DenseSpec(M, K, N, frac_bits=act_bits[1], s0=s0, acc_dtype=acc, has_bias=has_bias)
    x = _acts(rng, (M, K), act_mode, act_bits)
    bias = torch.from_numpy(rng.normal(size=N).astype(np.float32)) if has_bias else None
    ref = shift_linear(torch.from_numpy(x), shift, sign, act_bits[1], bias)
    _check("dense", spec, codes, x, bias, act_bits, ref, k_tiles=None if seed % 2 else 3)


@pytest.mark.bitexact
@settings(max_examples=examples(250), deadline=None)
@given(st.sampled_from([CONVS[0], CONVS[2], CONVS[3], CONVS[8], CONVS[11], CONVS[12], CONVS[13], CONVS[14]]), st.integers(0, 2**32 - 1))
def test_pack_matches_its_numpy_twin(case, seed):
    """The pre-kernel writes every element of the packed buffer (tap copies, halo rows, padding, zero tail)."""
    (C, O, H, W, KH, KW, stride, padding, dilation, groups, has_bias), _ = case
    rng = np.random.default_rng(seed)
    spec = Conv2dSpec(1, C, H, W, O, KH, KW, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      frac_bits=5, s0=BASE_SHIFT, has_bias=has_bias)
    k = sts.build("conv2d", spec, np.ones((O, C // groups, KH, KW), np.int8), HOST, (3, 5))
    mod = _compiled("conv2d", spec, (3, 5)).module          # the same module the conv test uses
    x = rng.integers(-128, 128, size=spec.x_shape)
    packed = tvm.runtime.tensor(np.full(k.packed_shape, 77, np.int16))
    mod["pack"](tvm.runtime.tensor(x.astype(np.int32)), packed)
    assert np.array_equal(packed.numpy(), sts.pack_numpy(k.layout, x, "int16"))


# (kind, geometry): conv ((N, C, O, H, W, KH, KW, stride, padding, dilation, groups)) or dense ((M, K, N))
PACK_CASES = [
    ("conv2d", (1, 4, 6, 7, 9, 3, 3, 1, 1, 1, 1)),
    ("conv2d", (2, 3, 5, 9, 8, 3, 3, 2, (1, 0, 2, 1), 1, 1)),     # two images, stride 2, asymmetric padding
    ("conv2d", (1, 4, 4, 10, 9, 3, 2, (2, 1), 2, (2, 1), 1)),     # dilation
    ("conv2d", (1, 6, 4, 8, 8, 3, 3, 1, 1, 1, 2)),                # groups
    ("conv2d", (1, 6, 6, 12, 11, 3, 3, 2, 1, 1, 6)),              # depthwise, stride 2
    ("conv2d", (1, 4, 5, 9, 57, 3, 3, 2, 1, 1, 1)),               # halo layout, stride 2: vectors + shuffles
    ("conv2d", (1, 3, 4, 6, 28, 3, 3, 1, 1, 1, 1)),               # halo layout, stride 1
    ("conv2d", (2, 8, 8, 7, 7, 3, 3, 1, 1, 1, 8)),                # depthwise 7x7 (tap copies, rows of 8)
    ("conv2d", (1, 2, 2, 3, 3, 3, 3, 3, 1, 1, 1)),                # rows shorter than any vector
    ("dense", (3, 20, 5)),
]
#: activation formats: 8 bit (int16 lanes), 16 bit, 32 bit (int32 lanes, clamp in int64), 1 bit
PACK_FORMATS = [(3, 5), (8, 8), (16, 16), (1, 0)]


@functools.lru_cache(maxsize=None)
def _float_pack(kind: str, geom: tuple, fmt: tuple, rounding: str, qmax):
    """``(kernel, compiled quantising pack)`` of one case."""
    if kind == "dense":
        spec = DenseSpec(*geom, frac_bits=fmt[1], s0=0, acc_dtype="int64")
        codes = np.ones((geom[2], geom[1]), np.int8)
    else:
        n, c, o, h, w, kh, kw, stride, padding, dilation, groups = geom
        spec = Conv2dSpec(n, c, h, w, o, kh, kw, stride=stride, padding=padding, dilation=dilation, groups=groups,
                          frac_bits=fmt[1], s0=0, acc_dtype="int64")
        codes = np.ones((o, c // groups, kh, kw), np.int8)
    k = sts.build(kind, spec, codes, HOST, fmt)
    prim = k.pack_float(rounding, qmax).with_attr("global_symbol", "pack")
    return k, tvm.tirx.build(tvm.IRModule({"pack": prim}), target=k.target)["pack"]


@pytest.mark.bitexact
@settings(max_examples=examples(60), deadline=None)
@given(st.sampled_from(PACK_CASES), st.sampled_from(PACK_FORMATS), st.sampled_from(["nearest", "floor"]),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_quantizing_pack_equals_to_fixed_then_pack(case, fmt, rounding, deepshift_qmax, seed):
    """``pack_float(x)`` == ``pack(to_fixed(x))``: ties (both roundings), both clamp edges, +-inf, a smaller
    ``qmax`` (``numerics="deepshift"``), every layout (halo / tap copies, stride phases, dense)."""
    from shiftcomp.quant import to_fixed

    kind, geom = case
    n_bits = sum(fmt)
    qmax = 2 ** (n_bits - 1) - 2 if deepshift_qmax and n_bits > 1 else None
    k, pack = _float_pack(kind, geom, fmt, rounding, qmax)
    rng = np.random.default_rng(seed)
    q, top = 2.0 ** -fmt[1], 2.0 ** (n_bits - 1)
    x_shape = tuple(k.spec.x_shape)
    size = int(np.prod(x_shape))
    pool = np.concatenate([
        (rng.integers(-2 * int(top), 2 * int(top), size=size) + 0.5) * q,     # ties, in and out of range
        rng.normal(size=size) * top * q * rng.choice([0.01, 0.5, 4.0]),
        np.array([top - 1, top, top + 1, -top, -top - 1, 1e30, -1e30, np.inf, -np.inf, 0.0, -0.0]) * q,
    ])
    x = rng.choice(pool, size=size).astype(np.float32).reshape(x_shape)
    x_q = to_fixed(torch.from_numpy(x), *fmt, rounding).numpy()
    if qmax is not None:
        x_q = np.minimum(x_q, qmax)
    packed = tvm.runtime.tensor(np.full(k.packed_shape, 77, k.lane_dtype))
    pack(tvm.runtime.tensor(x), packed)
    assert np.array_equal(packed.numpy(), sts.pack_numpy(k.layout, x_q, k.lane_dtype)), (case, fmt, rounding)


def test_derive_rebuilds_the_weight_inputs_and_errors_are_clear():
    rng = np.random.default_rng(0)
    spec = Conv2dSpec(1, 4, 6, 6, 5, 3, 3, padding=1, frac_bits=5, s0=-4)
    codes = _codes(rng, (5, 4, 3, 3), "mixed", 6)
    k = sts.build("conv2d", spec, codes, HOST, (3, 5))
    assert k.kind == "conv2d" and k.lane_dtype == "int16"
    assert all(np.array_equal(a, b) for a, b in zip(k.derive(codes), k.weight_inputs))
    assert all(a.dtype == np.int32 for a in k.weight_inputs)
    with pytest.raises(ValueError, match="codes have shape"):
        sts.build("conv2d", spec, codes[:, :2], HOST, (3, 5))
    with pytest.raises(ValueError, match="frac_bits"):
        sts.build("conv2d", spec, codes, HOST, (4, 4))
    with pytest.raises(ValueError, match="unknown"):
        sts.build("matmul", spec, codes, HOST, (3, 5))
    with pytest.raises(ValueError, match="acc_dtype"):
        sts.build("conv2d", spec, np.full((5, 4, 3, 3), 40, np.int8), HOST, (3, 5))


def test_small_outputs_get_narrower_vectors():
    """A vector as wide as the target's is kept unless a narrower one saves a quarter of the padded lanes."""
    spr = {"kind": "llvm", "mcpu": "sapphirerapids"}
    lanes = lambda h, w, cpu=spr: sts.build(  # noqa: E731
        "conv2d", Conv2dSpec(1, 8, h, w, 4, 3, 3, padding=1, frac_bits=5, s0=-4), np.ones((4, 8, 3, 3), np.int8),
        cpu, (3, 5)).vector_lanes
    assert lanes(8, 8) == 32 and lanes(4, 4) == 16 and lanes(2, 3) == 8 and lanes(7, 7) == 32
    assert lanes(4, 4, {"kind": "llvm", "mcpu": "znver3"}) == 16


def test_512_bit_vectors_read_aligned_tap_copies():
    """With vectors of a cache line, a 3x3 conv on 56-wide rows reads one copy per column tap, every term's
    load aligned (rows of 64); AVX2 keeps the halo layout (one copy, rows of 58 + garbage = 64); depthwise
    keeps the halo on both. An old artifact's derivation (no ``taps`` keyword) rebuilds the halo offsets."""
    spec = Conv2dSpec(1, 8, 56, 56, 4, 3, 3, padding=1, frac_bits=5, s0=-4)
    codes = _codes(np.random.default_rng(2), (4, 8, 3, 3), "mixed", 6)
    def build(cpu, **kw):
        return sts.build("conv2d", spec, codes, {"kind": "llvm", "mcpu": cpu}, (3, 5), **kw)
    spr, zen3 = build("sapphirerapids"), build("znver3")
    assert (spr.taps, spr.layout.halo, len(spr.layout.copies), spr.layout.row_len) == (True, False, 3, 64)
    assert (zen3.taps, zen3.layout.halo, len(zen3.layout.copies), zen3.layout.row_len) == (False, True, 1, 64)
    assert spr.derive.keywords["taps"] == 1 and zen3.derive.keywords["taps"] == 0
    offsets = spr.weight_inputs[4]
    assert not (offsets % 32).any()                       # every term at a cache line (32 int16)
    assert (zen3.weight_inputs[4] % 32).any()
    halo = build("sapphirerapids", taps=False)
    assert halo.layout.halo and not halo.taps
    old = dict(halo.derive.keywords)
    del old["taps"]
    assert all(np.array_equal(a, b) for a, b in zip(sts.derive_conv2d_inputs(spec, codes, **old), halo.weight_inputs))
    dw = Conv2dSpec(1, 8, 56, 56, 8, 3, 3, padding=1, groups=8, frac_bits=5, s0=-4)
    k = sts.build("conv2d", dw, np.ones((8, 1, 3, 3), np.int8), {"kind": "llvm", "mcpu": "sapphirerapids"}, (3, 5))
    assert k.kind == "depthwise" and k.layout.halo and not k.taps


def test_conv_planes_span_an_odd_number_of_cache_lines():
    """The conv kernel's planes are an odd number of 64-byte lines (int16: 32 lanes, int32: 16), recorded in
    its derivation; depthwise and dense keep aligned planes. An old artifact's derivation (no
    ``odd_lines``) rebuilds offsets into aligned planes."""
    spec = Conv2dSpec(1, 16, 14, 14, 4, 3, 3, padding=1, frac_bits=5, s0=-4)   # 16 x 16 halo rows: 8 lines
    codes = _codes(np.random.default_rng(5), (4, 16, 3, 3), "mixed", 6)
    zen3 = {"kind": "llvm", "mcpu": "znver3"}
    k = sts.build("conv2d", spec, codes, zen3, (3, 5))
    assert (k.layout.plane, k.odd_lines, k.derive.keywords["odd_lines"]) == (288, 32, 32)
    wide = Conv2dSpec(1, 16, 14, 14, 4, 3, 3, padding=1, frac_bits=12, s0=-4)
    k32 = sts.build("conv2d", wide, codes, zen3, (4, 12))
    assert k32.lane_dtype == "int32" and k32.odd_lines == 16 and (k32.layout.plane // 16) % 2 == 1
    old = dict(k.derive.keywords)
    del old["odd_lines"]
    aligned = sts.derive_conv2d_inputs(spec, codes, **old)
    assert aligned[4].max() < 16 * 256 and k.weight_inputs[4].max() >= 15 * 288
    dw = Conv2dSpec(1, 16, 14, 14, 16, 3, 3, padding=1, groups=16, frac_bits=5, s0=-4)
    assert sts.build("conv2d", dw, np.ones((16, 1, 3, 3), np.int8), zen3, (3, 5)).layout.plane == 256
    dense = DenseSpec(64, 32, 8, frac_bits=5, s0=-4)
    assert sts.build("dense", dense, np.ones((8, 32), np.int8), zen3, (3, 5)).layout.plane == 64


def test_default_input_channel_tiles_follow_the_l1_cache():
    """Wide 3x3 convs on small images get tiles sized to the target's L1d; 1x1 convs, narrow layers and dense
    get none; forced tiles are clamped to the input channels."""
    codes = np.ones((64, 256, 3, 3), np.int8)
    wide = Conv2dSpec(1, 256, 8, 8, 64, 3, 3, padding=1, frac_bits=5, s0=-4)
    tiles = {cpu: sts.build("conv2d", wide, codes, {"kind": "llvm", "mcpu": cpu}, (3, 5)).k_tiles
             for cpu in ("znver3", "sapphirerapids")}
    # 64-pixel blocks on both; 3 tap copies x 80 int16 per channel = 480 B: 123 KB of activations per block,
    # in tiles of <= 5/6 of 32 KiB (Zen 3) or 48 KiB (Sapphire Rapids)
    assert tiles == {"znver3": 5, "sapphirerapids": 3}
    # aligned tap copies of 56-wide rows: 3 copies x 256 int16 = 1.5 KB per channel, 98 KB for 64 channels:
    # 3 tiles of >= MIN_TILE_CHANNELS; a stride-2 conv keeps twice as many channels per tile
    spr = {"kind": "llvm", "mcpu": "sapphirerapids"}
    c56 = Conv2dSpec(1, 64, 56, 56, 8, 3, 3, padding=1, frac_bits=5, s0=-4)
    assert sts.build("conv2d", c56, np.ones((8, 64, 3, 3), np.int8), spr, (3, 5)).k_tiles == 3
    s28 = Conv2dSpec(1, 128, 28, 28, 8, 3, 3, stride=2, padding=1, frac_bits=5, s0=-4)
    assert sts.build("conv2d", s28, np.ones((8, 128, 3, 3), np.int8), spr, (3, 5)).k_tiles == 128 // 32
    k = sts.build("conv2d", wide, codes, HOST, (3, 5))
    assert k.weight_inputs[0].shape == (k.k_tiles * 64 + 1,)
    narrow = Conv2dSpec(1, 16, 32, 32, 16, 3, 3, padding=1, frac_bits=5, s0=-4)
    assert sts.build("conv2d", narrow, np.ones((16, 16, 3, 3), np.int8), HOST, (3, 5)).k_tiles == 1
    pointwise = Conv2dSpec(1, 960, 7, 7, 16, 1, 1, frac_bits=5, s0=-4)
    assert sts.build("conv2d", pointwise, np.ones((16, 960, 1, 1), np.int8), HOST, (3, 5)).k_tiles == 1
    dense = DenseSpec(64, 512, 8, frac_bits=5, s0=-4)
    assert sts.build("dense", dense, np.ones((8, 512), np.int8), HOST, (3, 5)).k_tiles == 1
    assert sts.build("conv2d", narrow, np.ones((16, 16, 3, 3), np.int8), HOST, (3, 5), k_tiles=99).k_tiles == 16
    # just under the share still tiles in two: the halo rows of 64 channels at 56 wide are 25 KB on Zen 3
    zen3 = {"kind": "llvm", "mcpu": "znver3"}
    assert sts.build("conv2d", c56, np.ones((8, 64, 3, 3), np.int8), zen3, (3, 5)).k_tiles == 2
    half = Conv2dSpec(1, 32, 56, 56, 8, 3, 3, padding=1, frac_bits=5, s0=-4)
    assert sts.build("conv2d", half, np.ones((8, 32, 3, 3), np.int8), zen3, (3, 5)).k_tiles == 1


# ------------------------------------------------------------------------------------------------- asm
def _asm(target: dict, kind: str = "conv2d") -> str:
    spec = Conv2dSpec(1, 16, 16, 16, 8, 3, 3, padding=1, frac_bits=5, s0=-6, has_bias=True)
    codes = _codes(np.random.default_rng(1), (8, 16, 3, 3), "mixed", 6)
    k = sts.build(kind, spec, codes, target, (3, 5))
    return tvm.tirx.build(k.main.with_attr("global_symbol", "main"), target=k.target).inspect_source("asm")


def _hot_block(asm: str, op: str, lanes: str = "") -> list[str]:
    """The basic block with the most instructions starting with ``op`` (and naming ``lanes``)."""
    blocks, cur = [], []
    for line in asm.splitlines():
        if line and not line.startswith(("\t", " ")) and line.rstrip().endswith(":"):
            blocks.append(cur)
            cur = []
        cur.append(line.strip())
    blocks.append(cur)
    return max(blocks, key=lambda b: sum(l.startswith(op) and lanes in l for l in b))


@pytest.mark.parametrize("mcpu,reg,lanes", [("znver3", "%ymm", 16), ("sapphirerapids", "%zmm", 32)])
def test_x86_inner_loop_is_vpaddw_with_memory_operands(mcpu, reg, lanes):
    target = {"kind": "llvm", "mcpu": mcpu}
    assert sts.vector_bits(tvm.target.Target(target)) == lanes * 16
    hot = _hot_block(_asm(target), "vpaddw")
    adds = [l for l in hot if l.startswith("vpaddw")]
    assert len(adds) >= 4 and all(reg in l and "(" in l for l in adds), hot   # vpaddw mem, reg, reg
    assert not any(l.startswith(("imul", "vpmull", "mul")) for l in hot)


def test_aarch64_neon_inner_loop_is_vector_adds():
    asm = _asm({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    hot = _hot_block(asm, "add\tv", ".8h")                   # ldp q, q + add v.8h (8 int16 lanes) per term
    assert sum(l.startswith("add\tv") and l.count(".8h") == 3 for l in hot) >= 4, hot
    assert not any(l.startswith(("mul", "mla", "smull")) for l in hot)


# ---------------------------------------------------------------------------- the TVM 0.27 miscompile
@T.prim_func
def _ragged_sums(x: T.Buffer((64,), "int32"), ptr: T.Buffer((4,), "int32"), lo: T.Buffer((8,), "int32"),
                 hi: T.Buffer((8,), "int32"), out: T.Buffer((3,), "int32")):
    T.func_attr({"global_symbol": "ragged_sums", "tir.noalias": True})
    for r in range(3):
        out[r] = 0
        for s in range(ptr[r], ptr[r + 1]):            # non-zero start; the inner bounds use `s`
            for t in range(lo[s], hi[s]):
                out[r] = out[r] + x[t]


def test_tvm_canonicalize_loop_miscompile_is_still_there():
    """Passes while TVM 0.27's ``s_tir.CanonicalizeLoop`` miscompiles ``range(a, b)`` loops whose variable
    bounds a nested loop. When this fails, TVM is fixed: drop ``CANONICALIZE_LOOP_WORKAROUND`` (and the
    zero-based loops it asks for) from ``schedules/sum_then_shift.py`` and delete this test."""
    x = np.arange(64, dtype=np.int32) * 3 + 1
    ptr = np.array([0, 2, 5, 8], np.int32)
    lo = np.array([0, 10, 5, 20, 30, 1, 40, 50], np.int32)
    hi = np.array([4, 12, 9, 25, 31, 3, 48, 60], np.int32)
    want = [sum(int(x[t]) for s in range(ptr[r], ptr[r + 1]) for t in range(lo[s], hi[s])) for r in range(3)]
    mod = tvm.tirx.build(_ragged_sums, target=tvm.target.Target({"kind": "llvm"}))
    out = tvm.runtime.tensor(np.zeros(3, np.int32))
    mod["ragged_sums"](*[tvm.runtime.tensor(a) for a in (x, ptr, lo, hi)], out)
    assert sts.CANONICALIZE_LOOP_WORKAROUND
    assert out.numpy().tolist() != want, ("TVM's CanonicalizeLoop bug is fixed: drop CANONICALIZE_LOOP_WORKAROUND "
                                          "in schedules/sum_then_shift.py and this test")


@pytest.mark.bitexact
@pytest.mark.parametrize("geom", [(4, 6, 7, 9, 3, 3, 1, 1, 1, 1), (3, 4, 6, 28, 3, 3, 2, 1, 1, 1),
                                  (6, 6, 5, 28, 3, 3, 1, 1, 1, 6)])
def test_conv2d_batches_equal_reference(geom):
    """Several images per call (tap copies, halo + stride 2, depthwise halo)."""
    C, O, H, W, KH, KW, stride, padding, dilation, groups = geom
    rng = np.random.default_rng(7)
    codes = _codes(rng, (O, C // groups, KH, KW), "mixed", 6)
    shift, sign = _weights(codes, BASE_SHIFT)
    spec = Conv2dSpec(3, C, H, W, O, KH, KW, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      frac_bits=5, s0=BASE_SHIFT, has_bias=True)
    x = rng.integers(-128, 128, size=spec.x_shape)
    bias = torch.from_numpy(rng.normal(size=O).astype(np.float32))
    ref = shift_conv2d(torch.from_numpy(x), shift, sign, 5, bias, stride, padding, dilation, groups)
    y = sts.build("conv2d", spec, codes, HOST, (3, 5))(x, bias.numpy())
    assert torch.equal(torch.from_numpy(y), ref.out)
