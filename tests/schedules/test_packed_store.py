"""The integer handoff (schedules.packed_store): a conv kernel that stores its output quantised into the next
kernel's packed input writes exactly the buffer the quantising pack would have written from its float output,
zero regions included; geometries it cannot write that way are refused."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples

from schedules import sum_then_shift as sts
from schedules.compute import Conv2dSpec
from schedules.epilogue import Epilogue, EpilogueStep
from schedules.packed_store import PackedStore, _writes_the_pack, copy_offsets

HOST = "llvm"
RELU = Epilogue((EpilogueStep("relu"),))
BN_RELU = Epilogue((EpilogueStep("mul", "channel", index=0), EpilogueStep("add", "channel", index=1),
                    EpilogueStep("relu")))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One TVM thread: these kernels are tiny and a spinning pool only slows the suite down."""
    pool = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    n = tvm.runtime.num_threads()
    if pool is not None:
        pool(1, 1)
    yield
    if pool is not None:
        pool(1, n)


def _kernel(n, c, h, w, o, k, stride, groups, seed, taps=None):
    spec = Conv2dSpec(n, c, h, w, o, k, k, stride=stride, padding=k // 2, groups=groups, frac_bits=5, s0=-6,
                      acc_dtype="int32", has_bias=True)
    codes = np.random.default_rng(seed).integers(-7, 8, size=(o, c // groups, k, k)).astype(np.int8)
    return spec, sts.build("conv2d", spec, codes, HOST, (3, 5), taps=taps)


@functools.lru_cache(maxsize=None)
def _built(prim: tvm.tirx.PrimFunc):
    return tvm.tirx.build(prim.with_attr("global_symbol", "f"), target=tvm.target.Target(HOST))["f"]


def _t(a):
    return tvm.runtime.tensor(np.ascontiguousarray(a))


@pytest.mark.bitexact
@settings(max_examples=examples(24), deadline=None)
@given(n=st.integers(1, 2), hw=st.sampled_from([(8, 8), (7, 9), (5, 5), (16, 16), (4, 12)]),
       c=st.sampled_from([3, 8]), o=st.sampled_from([4, 8]), stride=st.sampled_from([1, 2]),
       nxt=st.sampled_from([(3, 1), (1, 1), (3, "dw")]), ep=st.sampled_from(["relu", "bn_relu", "none"]),
       scale=st.sampled_from([1.0, 300.0]), seed=st.integers(0, 2 ** 16))
def test_packed_store_writes_what_the_quantising_pack_writes(n, hw, c, o, stride, nxt, ep, scale, seed):
    """``scale=300`` saturates most activations (codes -128 and 127) on the way into the next layer."""
    spec, k = _kernel(n, c, *hw, o, 3, stride, 1, seed)
    oh, ow = spec.out_hw
    kn, g = nxt
    _, k2 = _kernel(n, o, oh, ow, 4 if g == 1 else o, kn, 1, 1 if g == 1 else o, seed + 1)
    store = k2.packed_input("nearest")
    assert k.can_store_into(store)        # stride-1 "same" consumers of an unpadded producer: always supported
    epilogue = {"relu": RELU, "bn_relu": BN_RELU, "none": Epilogue()}[ep]
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=spec.x_shape).astype(np.int32)
    xp = _t(np.zeros(k.packed_shape, k.lane_dtype))
    _built(k.pack)(_t(x), xp)
    args = [xp] + [_t(a) for a in k.weight_inputs] + [_t((rng.normal(size=o) * scale).astype(np.float32))]
    if epilogue.table_rows:
        table = np.stack([rng.normal(size=o) * scale, rng.normal(size=o), np.full(o, -0.0)]).astype(np.float32)
        args.append(_t(table[:epilogue.table_rows]))
    y = _t(np.zeros(spec.out_shape, np.float32))
    _built(k.main_with(epilogue))(*args, y)
    want = _t(np.zeros(k2.packed_shape, k2.lane_dtype))
    _built(k2.pack_float("nearest"))(y, want)
    got = _t(np.full(k2.packed_shape, 77, k2.lane_dtype))    # every element must be written
    _built(k.main_with(epilogue, store))(*args, got)
    assert np.array_equal(got.numpy(), want.numpy())


def test_geometries_the_store_cannot_write_are_refused():
    spec, k = _kernel(1, 4, 8, 8, 4, 3, 1, 1, 0)
    ok = k.packed_input("nearest")
    assert copy_offsets(spec.out_shape, k.layout.row_len, ok) == (8 + 1, 8, 8 - 1)   # one row + pad - column shift
    _, strided = _kernel(1, 4, 8, 8, 4, 3, 2, 1, 0)               # the consumer has stride 2: phases
    assert not k.can_store_into(strided.packed_input("nearest"))
    _, wide = _kernel(1, 4, 8, 8, 6, 3, 1, 1, 0)                   # another channel count
    assert k.can_store_into(wide.packed_input("nearest"))          # the consumer's *output* channels do not matter
    _, other = _kernel(1, 6, 8, 8, 4, 3, 1, 1, 0)                  # the consumer reads 6 channels, we write 4
    assert not k.can_store_into(other.packed_input("nearest"))
    _, halo = _kernel(1, 4, 28, 28, 4, 3, 1, 1, 0, taps=False)     # 28 wide: the halo layout (rows of 32)
    assert halo.layout.halo
    spec28, k28 = _kernel(1, 4, 28, 28, 4, 3, 1, 1, 0)
    assert not k28.can_store_into(halo.packed_input("nearest"))
    # the layout check itself: offsets one off are caught by the simulation of the stores
    assert _writes_the_pack(spec.out_shape, (9, 8, 7), ok.layout)
    assert not _writes_the_pack(spec.out_shape, (9, 8, 8), ok.layout)
    assert not _writes_the_pack(spec.out_shape, (10, 9, 8), ok.layout)
    assert copy_offsets(spec.out_shape, k.layout.row_len,
                        PackedStore(dataclasses.replace(ok.layout, images=2), "int16", (3, 5), "nearest")) is None
    with pytest.raises(ValueError, match="cannot store"):
        k.main_with(Epilogue(), strided.packed_input("nearest"))


def test_the_audit_counts_the_quantising_store_as_epilogue():
    """The packed store computes floats (scale, BatchNorm, x * 2**F) and stores int16: still epilogue, so the
    data path stays multiplication-free."""
    from passes.audit import _reads_float
    x = tvm.tirx.Var("x", "float32")
    assert _reads_float(tvm.tirx.nearbyint(x * 32.0).astype("int16"))
    assert not _reads_float(tvm.tirx.Var("i", "int32") + 1)


@pytest.mark.parametrize("mcpu", ["znver3", "sapphirerapids"])
def test_masked_copy_stores_stay_whole_vectors(mcpu):
    """The copies whose first or last column is zeroed are stored as whole vectors (an ``and`` with a lane
    mask), not in 16/8/4/2/1-lane pieces: pieces are what LLVM makes of the scalar stores that TVM's
    vectoriser leaves when the zeroing is an ``if_then_else`` with a condition that varies across lanes."""
    target = {"kind": "llvm", "mcpu": mcpu}
    spec = Conv2dSpec(1, 16, 32, 32, 16, 3, 3, padding=1, frac_bits=5, s0=-6, acc_dtype="int32", has_bias=True)
    codes = np.random.default_rng(0).integers(-7, 8, size=(16, 16, 3, 3)).astype(np.int8)
    k = sts.build("conv2d", spec, codes, target, (3, 5))
    store = k.packed_input("nearest")
    assert k.can_store_into(store) and len(store.layout.copies) == 3      # two of the copies are masked
    prim = k.main_with(RELU, store).with_attr("global_symbol", "f")
    asm = tvm.tirx.build(prim, target=k.target).inspect_source("asm")
    lines = [l.strip() for l in asm.splitlines()]
    pieces = [l for l in lines if l.startswith(("vpextrw", "vpextrd", "vpextrb")) and "(" in l]   # lane -> memory
    assert not pieces, pieces
    quantised = [l for l in lines if l.startswith("vcvttps2dq")]
    assert quantised and not any("%xmm" in l for l in quantised)         # no 4-lane leftovers of the quantise
