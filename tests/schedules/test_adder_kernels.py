"""Adder kernels (schedules/adder.py) against the exact reference, bit for bit.

Each hypothesis example draws a batch of kernel cases that are compiled into one module (one LLVM build
per batch keeps hundreds of drawn cases within a CI budget).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import tvm
from hypothesis import given, settings, strategies as st
from hypothesis_support import examples

from schedules.adder import (AdderSpec, adder_conv2d, build_adder_kernel, psadbw_applicable, psadbw_preferred,
                             psadbw_weights, schedule_cuda, weight_dtype)
from schedules.target import resolve_target
from shiftcomp.reference import adder_conv2d as ref_conv, adder_conv2d_float, adder_float_error_bound

BATCH = 10


@st.composite
def kernel_case(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    cg, og = draw(st.integers(1, 10)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2), (3, 2)]))
    dil = draw(st.sampled_from([(1, 1), (1, 1), (2, 1)]))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(dil[0] * (kh - 1) + 1, 9))
    w = draw(st.integers(dil[1] * (kw - 1) + 1, 9))
    fmt = draw(st.sampled_from(["int8", "int8", "mixed", "wide", "int64"]))
    if fmt == "int8":
        x_bits, w_bits = 8, draw(st.integers(2, 8))
    elif fmt == "mixed":
        x_bits, w_bits = draw(st.integers(2, 16)), draw(st.integers(2, 16))
    elif fmt == "wide":
        x_bits, w_bits = draw(st.integers(17, 24)), draw(st.integers(9, 24))
    else:                                                        # bound >= 2**31: int64 accumulator
        x_bits, w_bits = 31, draw(st.integers(28, 31))
    return dict(spec=AdderSpec(draw(st.integers(1, 2)), cg * groups, h, w, og * groups, kh, kw, stride, pad, dil,
                               groups, frac_bits=draw(st.integers(0, 8)),
                               acc_dtype="int64" if fmt == "int64" else "int32", x_bits=x_bits, w_bits=w_bits,
                               w_dtype=weight_dtype(w_bits)),
                kernel=draw(st.sampled_from(["auto", "plain"])), bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2 ** 16)))


def _data(case):
    spec = case["spec"]
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randint(-2 ** (spec.x_bits - 1), 2 ** (spec.x_bits - 1), spec.x_shape, generator=g)
    w = torch.randint(-2 ** (spec.w_bits - 1), 2 ** (spec.w_bits - 1), spec.weight_shape, generator=g)
    if case["seed"] % 3 == 0:                                  # saturated operands: the extreme differences
        x = torch.where(x > 0, 2 ** (spec.x_bits - 1) - 1, -2 ** (spec.x_bits - 1))
        w = torch.where(w > 0, -2 ** (spec.w_bits - 1), 2 ** (spec.w_bits - 1) - 1)
    b = torch.randn(spec.out_channels, generator=g) if case["bias"] else torch.zeros(spec.out_channels)
    return x, w, b


def _run_batch(cases, target="llvm"):
    tgt = resolve_target(target)
    funcs, variants = {}, []
    for i, c in enumerate(cases):
        prim, variant = build_adder_kernel(c["spec"], tgt, c["kernel"])
        funcs[f"k{i}"] = prim.with_attr("global_symbol", f"k{i}")
        variants.append(variant)
    ex = tvm.compile(tvm.IRModule(funcs), target=tgt)
    dev = tvm.cpu()
    outs = []
    for i, c in enumerate(cases):
        spec = c["spec"]
        x, w, b = _data(c)
        wk = psadbw_weights(w.numpy()) if variants[i].startswith("psadbw") else w.numpy().astype(spec.w_dtype)
        out = tvm.runtime.tensor(np.zeros(spec.out_shape, "float32"), dev)
        ex[f"k{i}"](tvm.runtime.tensor(x.numpy().astype("int32"), dev), tvm.runtime.tensor(wk, dev),
                    tvm.runtime.tensor(b.numpy(), dev), out)
        outs.append(torch.from_numpy(out.numpy()))
    return outs, variants


@pytest.mark.bitexact
@settings(max_examples=examples(30), deadline=None)
@given(st.lists(kernel_case(), min_size=BATCH, max_size=BATCH))
def test_adder_kernels_equal_reference(cases):
    outs, variants = _run_batch(cases)
    for c, y, variant in zip(cases, outs, variants):
        spec = c["spec"]
        x, w, b = _data(c)
        r = ref_conv(x, w, spec.frac_bits, b if c["bias"] else None, spec.stride, spec.padding, spec.dilation,
                     spec.groups)
        if spec.acc_dtype == "int32":
            assert r.acc_dtype == "int32"
        ref = r.out if c["bias"] else r.out + 0.0
        assert torch.equal(y, ref), (spec, variant, (y - ref).abs().max())
        if c["kernel"] == "auto":
            assert variant.startswith("psadbw") == psadbw_preferred(spec)


def test_psadbw_kernel_on_resnet_shape_and_int64_bound_case():
    cases = [dict(spec=AdderSpec(1, 16, 8, 8, 16, 3, 3, padding=(1, 1, 1, 1), frac_bits=5, x_bits=8, w_bits=8,
                                 w_dtype="int8"), kernel="psadbw", bias=True, seed=3),
             dict(spec=AdderSpec(1, 300, 1, 1, 2, 1, 1, frac_bits=8, acc_dtype="int64", x_bits=24, w_bits=24,
                                 w_dtype="int32"), kernel="plain", bias=False, seed=3)]
    outs, variants = _run_batch(cases)
    assert variants == ["psadbw-avx2", "plain"] or variants[0] == "psadbw-avx512"
    for c, y in zip(cases, outs):
        s = c["spec"]
        x, w, b = _data(c)
        r = ref_conv(x, w, s.frac_bits, b, s.stride, s.padding, s.dilation, s.groups)
        assert torch.equal(y, r.out)
    assert r.acc_dtype == "int64"


@pytest.mark.bitexact
def test_psadbw_kernel_strided_and_grouped_shapes():
    """ResNet-20's downsampling convs (3x3 stride 2 and the 1x1 stride-2 shortcut shape), a grouped and a
    depthwise stride-2 conv, odd channels per group (1-channel register tiles): vpsadbw, bit-exact."""
    shapes = [AdderSpec(1, 16, 32, 32, 32, 3, 3, stride=(2, 2), padding=(1, 1, 1, 1)),
              AdderSpec(2, 32, 16, 16, 64, 1, 1, stride=(2, 2)),
              AdderSpec(1, 12, 9, 11, 18, 3, 3, stride=(2, 1), padding=(1, 0, 1, 2), dilation=(1, 2), groups=6),
              AdderSpec(1, 16, 8, 8, 16, 3, 3, stride=(2, 2), padding=(1, 1, 1, 1), groups=16)]
    cases = [dict(spec=dataclasses.replace(s, frac_bits=5, x_bits=8, w_bits=8, w_dtype="int8"), kernel="psadbw",
                  bias=True, seed=k) for k, s in enumerate(shapes)]
    outs, variants = _run_batch(cases)
    assert all(v.startswith("psadbw") for v in variants)
    for c, y in zip(cases, outs):
        s = c["spec"]
        x, w, b = _data(c)
        assert torch.equal(y, ref_conv(x, w, s.frac_bits, b, s.stride, s.padding, s.dilation, s.groups).out), s


def test_auto_takes_psadbw_unless_few_channels_per_group():
    tgt = resolve_target("llvm")
    base = AdderSpec(1, 16, 6, 6, 16, 3, 3, stride=(2, 2), frac_bits=3, x_bits=8, w_bits=8, w_dtype="int8")
    for groups, want in ((1, True), (2, True), (4, False), (16, False)):
        spec = dataclasses.replace(base, groups=groups)
        assert psadbw_applicable(spec) and psadbw_preferred(spec) == want
        assert build_adder_kernel(spec, tgt)[1].startswith("psadbw") == want
    assert not psadbw_preferred(dataclasses.replace(base, x_bits=9))


def test_float_kernel_within_summation_bound():
    tgt = resolve_target("llvm")
    spec = AdderSpec(2, 6, 7, 8, 4, 3, 3, (1, 2), (1, 1, 0, 2), (1, 1), 2, frac_bits=None)
    prim, variant = build_adder_kernel(spec, tgt)
    assert variant == "plain"
    ex = tvm.compile(tvm.IRModule({"main": prim.with_attr("global_symbol", "main")}), target=tgt)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(spec.x_shape, generator=g) * 3
    w = torch.randn(spec.weight_shape, generator=g)
    b = torch.randn(spec.out_channels, generator=g)
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(spec.out_shape, "float32"), dev)
    ex["main"](tvm.runtime.tensor(x.numpy(), dev), tvm.runtime.tensor(w.numpy(), dev),
               tvm.runtime.tensor(b.numpy(), dev), out)
    y = torch.from_numpy(out.numpy())
    ref = adder_conv2d_float(x, w, None, spec.stride, spec.padding, spec.dilation, spec.groups)
    bound = adder_float_error_bound(ref, w[0].numel(), ref) + (ref + b.view(-1, 1, 1)).abs() * 2.0 ** -24
    assert bool(((y.double() - (ref + b.view(-1, 1, 1)).double()).abs() <= bound).all())


def test_psadbw_refuses_what_it_cannot_compute():
    from schedules.adder import adder_conv2d_psadbw

    with pytest.raises(ValueError, match="8-bit"):
        adder_conv2d_psadbw(AdderSpec(1, 8, 5, 5, 4, 3, 3, stride=(2, 2), frac_bits=None))
    with pytest.raises(ValueError, match="8-bit"):
        adder_conv2d_psadbw(AdderSpec(1, 8, 5, 5, 4, 3, 3, groups=2, frac_bits=3, x_bits=8, w_bits=9))
    with pytest.raises(ValueError, match="8-bit"):
        adder_conv2d_psadbw(AdderSpec(1, 8, 5, 5, 4, 3, 3, frac_bits=3, x_bits=9, w_bits=8))


def test_cuda_kernel_builds_without_multiply():
    """CUDA codegen of the plain adder kernel (no GPU needed): the source has sub/abs/add, no ``*`` on data."""
    from passes.audit import count_primfunc

    spec = AdderSpec(1, 8, 6, 6, 4, 3, 3, padding=(1, 1, 1, 1), frac_bits=4, x_bits=8, w_bits=8, w_dtype="int8")
    prim = schedule_cuda(adder_conv2d(spec), spec)
    counts = count_primfunc(prim, is_shift=True)
    assert counts["data"].mul == 0
    tgt = resolve_target({"kind": "cuda", "arch": "sm_80"})
    ex = tvm.compile(prim.with_attr("global_symbol", "main"), tgt)
    src = ex.mod.imports[0].inspect_source()
    assert "__global__" in src and "max(" in src


_VSADU4_SHIM = """
static inline unsigned int __vsadu4(unsigned int a, unsigned int b) {
  unsigned int s = 0;
  for (int i = 0; i < 32; i += 8) { int d = (int)((a >> i) & 255u) - (int)((b >> i) & 255u); s += d < 0 ? -d : d; }
  return s;
}
"""


@pytest.mark.skipif(not __import__("shutil").which("g++"), reason="g++ not on PATH")
@pytest.mark.parametrize("variant", ["vsadu4", "plain"])
def test_cuda_adder_source_runs_correctly_on_cpu(variant):
    """The generated CUDA C (``__vsadu4`` and plain) run on the CPU over its launch grid equals the reference."""
    from cuda_support import emulate_cuda

    from schedules.adder import adder_conv2d_vsadu4, vsadu4_weights

    spec = AdderSpec(2, 6, 5, 6, 4, 3, 2, (1, 2), (1, 0, 2, 1), (1, 1), 2, frac_bits=4, x_bits=8, w_bits=7,
                     w_dtype="int8")
    case = dict(spec=spec, bias=True, seed=3)
    x, w, b = _data(case)
    prim = schedule_cuda(adder_conv2d_vsadu4(spec) if variant == "vsadu4" else adder_conv2d(spec), spec)
    ex = tvm.compile(prim.with_attr("global_symbol", "main"), resolve_target({"kind": "cuda", "arch": "sm_80"}))
    src = ex.mod.imports[0].inspect_source()
    assert ("__vsadu4" in src) == (variant == "vsadu4")
    wk = vsadu4_weights(w.numpy()) if variant == "vsadu4" else w.numpy().astype("int8")
    out = emulate_cuda(src, prim, {"X_q": x.numpy().astype("int32"), "W": wk, "bias": b.numpy(),
                                   "out": np.zeros(spec.out_shape, "float32")}, prelude=_VSADU4_SHIM)["out"]
    r = ref_conv(x, w, spec.frac_bits, b, spec.stride, spec.padding, spec.dilation, spec.groups)
    assert torch.equal(torch.from_numpy(out), r.out)


def test_avx512_vpsadbw_kernel_cross_compiles():
    """On an AVX-512BW target the 64-byte form is chosen and LLVM emits zmm vpsadbw (cannot run on AVX2 hosts)."""
    tgt = resolve_target({"kind": "llvm", "mcpu": "sapphirerapids"})
    spec = AdderSpec(1, 16, 8, 8, 16, 3, 3, padding=(1, 1, 1, 1), frac_bits=5, x_bits=8, w_bits=8, w_dtype="int8")
    prim, variant = build_adder_kernel(spec, tgt)
    assert variant == "psadbw-avx512"
    asm = tvm.compile(tvm.IRModule({"main": prim.with_attr("global_symbol", "main")}), target=tgt).mod.inspect_source("asm")
    assert any("vpsadbw" in ln and "zmm" in ln for ln in asm.splitlines())
