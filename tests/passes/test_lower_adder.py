"""Compiled adder layers (frontend composite -> passes/lower_adder.py -> kernels) equal the exact reference.

Each hypothesis example compiles one model that applies several independently drawn adder layers to the
same input and returns all their outputs (one build per example, several drawn layers per build).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis_support import examples
from torch import nn

import shiftcomp as sc
from shiftcomp.errors import AccumulatorOverflowError


class Parallel(nn.Module):
    """Applies every layer to the same input; returns the tuple of outputs."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        return tuple(layer(x) for layer in self.layers)


@st.composite
def adder_config(draw):
    i_bits = draw(st.integers(1, 8))
    f_bits = draw(st.integers(0, 8))
    wb = draw(st.sampled_from([None, f_bits + 1, f_bits + 3, 8 if f_bits < 8 else None]))
    return sc.AdderConfig(act_bits=(i_bits, f_bits), weight_bits=wb, rounding=draw(st.sampled_from(["nearest", "floor"])))


@st.composite
def conv_layer(draw, c):
    groups = draw(st.sampled_from([1, 1, c])) if c > 1 else 1
    og = draw(st.integers(1, 4))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.just("same"), st.just("valid")))
    stride = draw(st.sampled_from([1, 2])) if padding != "same" else 1
    dil = draw(st.sampled_from([1, 1, 2]))
    return sc.nn.Conv2dAdder(c, og * groups, k, stride=stride, padding=padding, dilation=dil, groups=groups,
                             bias=draw(st.booleans()), config=draw(adder_config()))


@pytest.mark.bitexact
@settings(max_examples=examples(6), deadline=None)
@given(st.data())
def test_compiled_adder_convs_equal_reference(data):
    c = data.draw(st.integers(1, 4))
    layers = [data.draw(conv_layer(c)) for _ in range(4)]
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    for layer in layers:
        with torch.no_grad():
            layer.weight.mul_(2.0)
            if layer.bias is not None:
                layer.bias.normal_()
    model = Parallel(layers).eval()
    x = torch.randn(2, c, 7, 8) * 2
    compiled = sc.compile(model, x)
    assert compiled.audit.datapath_multiplies == 0
    with sc.reference.exact(model):
        refs = model(x)
    for y, r in zip(compiled(x), refs):
        assert torch.equal(y, r)


@pytest.mark.bitexact
@settings(max_examples=examples(4), deadline=None)
@given(st.data())
def test_compiled_adder_linears_equal_reference(data):
    k = data.draw(st.integers(1, 40))
    rows = data.draw(st.sampled_from([1, 3, 12]))
    layers = [sc.nn.LinearAdder(k, data.draw(st.integers(1, 9)), bias=data.draw(st.booleans()),
                                config=data.draw(adder_config())) for _ in range(4)]
    model = Parallel(layers).eval()
    x = torch.randn(rows, k) * 2
    compiled = sc.compile(model, x)
    assert compiled.audit.datapath_multiplies == 0
    with sc.reference.exact(model):
        refs = model(x)
    for y, r in zip(compiled(x), refs):
        assert torch.equal(y, r)


def test_int64_accumulator_from_the_bound_and_refusal():
    torch.manual_seed(0)
    layer = sc.nn.LinearAdder(300, 3, config=sc.AdderConfig(act_bits=(16, 8))).eval()
    with torch.no_grad():
        layer.weight.uniform_(-30000, 30000)
    x = torch.randn(2, 300) * 20000
    compiled = sc.compile(layer, x)
    low = next(iter(compiled.layers.values()))
    assert low.plan.dtype == "int64" and low.plan.bound >= 2 ** 31
    with sc.reference.exact(layer):
        assert torch.equal(compiled(x), layer(x))
    wide = sc.nn.LinearAdder(2, 1, config=sc.AdderConfig(act_bits=(32, 0))).eval()
    with torch.no_grad():
        wide.weight.fill_(2.0 ** 30)
    # 2 * (2**31 + 2**30) < 2**63: still exact in int64; a bound >= 2**63 needs > 2**32 terms of 32-bit
    # operands, so the refusal is checked on the planning function directly
    from passes.lower_adder import adder_plan
    from shiftcomp.frontend.adder_layers import read_adder_layer

    info = read_adder_layer("wide", wide, (1, 2)).info
    import numpy as np

    with pytest.raises(AccumulatorOverflowError):
        adder_plan(info, np.full((1, 2 ** 3), 2 ** 62, dtype=np.int64))


def test_float_mode_adder_layer_within_bound():
    from shiftcomp.reference import adder_float_error_bound

    torch.manual_seed(0)
    layer = sc.nn.Conv2dAdder(3, 5, 3, padding=1, bias=True).eval()
    x = torch.randn(1, 3, 6, 6)
    compiled = sc.compile(layer, x)
    assert compiled.audit.datapath_multiplies == 0
    with sc.reference.exact(layer):
        ref = layer(x)
    y = compiled(x)
    bound = adder_float_error_bound(ref, 27, ref - layer.bias.detach().view(-1, 1, 1)) + ref.abs() * 2.0 ** -23
    assert bool(((y.double() - ref.double()).abs() <= bound).all())


def test_vpsadbw_is_chosen_for_8bit_stride1_and_matches_plain(monkeypatch):
    torch.manual_seed(0)
    layer = sc.nn.Conv2dAdder(8, 8, 3, padding=1, config=sc.AdderConfig(act_bits=(3, 5))).eval()
    x = torch.randn(1, 8, 6, 6)
    fast = sc.compile(layer, x)
    prim_attrs = [f.attrs for _, f in fast.relax_module.functions_items()
                  if f.attrs is not None and "shiftcomp.variant" in f.attrs]
    assert str(prim_attrs[0]["shiftcomp.variant"]).startswith("psadbw")
    monkeypatch.setenv("SHIFTCOMP_ADDER_KERNEL", "plain")
    plain = sc.compile(layer, x)
    assert torch.equal(fast(x), plain(x))


def test_shift_and_adder_layers_compile_export_load(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    cfg = sc.ShiftAddConfig(shift=sc.ShiftConfig(mode="PS", weight_bits=5, act_bits=(4, 4)),
                            adder=sc.AdderConfig(act_bits=(3, 5)))
    sc.convert(model, cfg)
    model.eval()
    with torch.no_grad():
        model[1].running_var.uniform_(1, 3)
    x = torch.randn(2, 3, 6, 6)
    compiled = sc.compile(model, x)
    kinds = sorted({str(k.role) for k in compiled.audit.kernels if k.role in ("shift", "adder")})
    assert kinds == ["adder", "shift"]
    assert compiled.audit.datapath_multiplies == 0
    with sc.reference.exact(model):
        ref = model(x)
    y = compiled(x)
    assert torch.equal(y, ref)
    path = tmp_path / "m.so"
    compiled.export(path)
    loaded = sc.load(path)
    assert torch.equal(loaded(x), y)


def test_cuda_target_builds_vsadu4_and_plain_kernels():
    """sc.compile for CUDA (code generation only, no GPU needed): 8-bit adder convs use __vsadu4."""
    torch.manual_seed(0)
    cfg = sc.AdderConfig(act_bits=(3, 5))
    model = nn.Sequential(sc.nn.Conv2dAdder(4, 6, 3, padding=1, config=cfg), nn.ReLU(), nn.Flatten(),
                          sc.nn.LinearAdder(6 * 5 * 5, 5, config=sc.AdderConfig(act_bits=(8, 8)))).eval()
    compiled = sc.compile(model, torch.randn(2, 4, 5, 5), target={"kind": "cuda", "arch": "sm_80"})
    variants = sorted(str(f.attrs["shiftcomp.variant"]) for _, f in compiled.relax_module.functions_items()
                      if f.attrs is not None and "shiftcomp.variant" in f.attrs)
    assert variants == ["plain-cuda", "vsadu4-cuda"]
    assert compiled.audit.datapath_multiplies == 0


def test_unlowered_module_runs_the_composite_fallback():
    """compile(lower=False) runs the adder composites' own bodies (the module as imported)."""
    torch.manual_seed(0)
    cfg = sc.AdderConfig(act_bits=(3, 5))
    model = nn.Sequential(sc.nn.Conv2dAdder(3, 4, 3, padding=1, config=cfg), nn.Flatten(),
                          sc.nn.LinearAdder(4 * 5 * 5, 3, config=cfg)).eval()
    x = torch.randn(2, 3, 5, 5)
    compiled = sc.compile(model, x, lower=False)
    with sc.reference.exact(model):
        assert torch.equal(compiled(x), model(x))
