"""Adder layers (AdderNet/ShiftAddNet): exact reference, training forward and gradients, conversion."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis_support import examples
from torch import nn

import shiftcomp as sc
from shiftcomp import reference as aref
from shiftcomp.adder import adaptive_grad_scale, adder_conv2d_train
from shiftcomp.adder_convert import ShiftAddConv2d
from shiftcomp.models import get_model


# ---------------------------------------------------------------------------------------------- brute force
def _brute_conv(x, w, stride, pad, dil, groups):
    """``-Σ|x - w|`` by unfold + broadcasting in int64 (or float64): independent of the taps/cdist route."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = F.pad(x.to(torch.float64), (pad[1], pad[3], pad[0], pad[2]))
    cols = F.unfold(xp, (kh, kw), dilation=dil, stride=stride)                 # (N, C*KH*KW, P)
    oh = (h + pad[0] + pad[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    cols = cols.reshape(n, groups, cg * kh * kw, oh * ow)
    wm = w.to(torch.float64).reshape(groups, o // groups, cg * kh * kw)
    d = (cols.unsqueeze(2) - wm.unsqueeze(0).unsqueeze(-1)).abs().sum(dim=3)     # (N, G, O/G, P)
    return -d.reshape(n, o, oh, ow)


@st.composite
def conv_cases(draw, max_bits=8):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 3))
    og = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(dil[0] * (kh - 1) + 1, 7))
    w = draw(st.integers(dil[1] * (kw - 1) + 1, 7))
    n = draw(st.integers(1, 2))
    bits = draw(st.integers(2, max_bits))
    seed = draw(st.integers(0, 2 ** 16))
    return dict(groups=groups, cin=cg * groups, cout=og * groups, k=(kh, kw), stride=stride, dil=dil, pad=pad,
                hw=(h, w), n=n, bits=bits, seed=seed)


@settings(max_examples=examples(60), deadline=None)
@given(conv_cases(), st.booleans(), st.integers(0, 6))
def test_adder_conv2d_reference_equals_brute_force(c, has_bias, frac):
    g = torch.Generator().manual_seed(c["seed"])
    lim = 2 ** (c["bits"] - 1)
    x = torch.randint(-lim, lim, (c["n"], c["cin"]) + c["hw"], generator=g)
    w = torch.randint(-lim, lim, (c["cout"], c["cin"] // c["groups"]) + c["k"], generator=g)
    bias = torch.randn(c["cout"], generator=g) if has_bias else None
    r = aref.adder_conv2d(x, w, frac, bias, c["stride"], c["pad"], c["dil"], c["groups"])
    acc = _brute_conv(x, w, c["stride"], c["pad"], c["dil"], c["groups"])
    assert torch.equal(r.acc, acc.to(torch.int64))
    out = (acc.to(torch.float32) * 2.0 ** -frac)
    if bias is not None:
        out = out + bias.view(-1, 1, 1)
    assert torch.equal(r.out, out)
    assert r.acc_dtype == "int32"


def test_padding_contributes_minus_abs_w():
    w = torch.tensor([[[[3, -5], [7, 2]]]])
    x = torch.zeros(1, 1, 1, 1, dtype=torch.int64)
    r = aref.adder_conv2d(x, w, 0, padding=1)                      # 2x2 output; each sees one real pixel
    # output (0, 0) meets x at tap (1, 1): |0 - 2| and padding elsewhere: |3| + |5| + |7|
    assert int(r.acc[0, 0, 0, 0]) == -(3 + 5 + 7 + 2)
    assert int(r.acc.sum()) == -4 * (3 + 5 + 7 + 2)


@settings(max_examples=examples(30), deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 5), st.integers(2, 16), st.integers(0, 2 ** 16))
def test_adder_linear_reference_and_int64_route(m, k, o, bits, seed):
    g = torch.Generator().manual_seed(seed)
    lim = 2 ** (bits - 1)
    x = torch.randint(-lim, lim, (m, k), generator=g)
    w = torch.randint(-lim, lim, (o, k), generator=g)
    r = aref.adder_linear(x, w, 3)
    brute = -(x.unsqueeze(1) - w.unsqueeze(0)).abs().sum(-1)
    assert torch.equal(r.acc, brute)
    # the chunked int64 route (used beyond 2**53) gives the same sums
    assert torch.equal(aref._sad_rows(x, w, exact_f64=False), brute.neg())


def test_accumulator_width_follows_the_bound():
    w = torch.full((2, 300), 2 ** 22, dtype=torch.int64)
    x = torch.full((1, 300), -(2 ** 23), dtype=torch.int64)
    r = aref.adder_linear(x, w, 0)
    assert aref.adder_accumulator_bound(w, 2 ** 23) == 300 * (2 ** 23 + 2 ** 22) >= 2 ** 31
    assert r.acc_dtype == "int64" and int(r.acc[0, 0]) == -300 * (2 ** 23 + 2 ** 22)
    # int64-exact values beyond 2**53 use the chunked integer route and still convert with one rounding
    big_w = torch.full((1, 2), 2 ** 61, dtype=torch.int64)
    big_x = torch.full((1, 2), -(2 ** 60), dtype=torch.int64)
    r = aref.adder_linear(big_x, big_w, 0)
    assert int(r.acc[0, 0]) == -2 * (2 ** 61 + 2 ** 60)
    assert r.acc_dtype == "int64"
    with pytest.raises(ValueError, match="2\\*\\*63"):
        aref.adder_linear(torch.full((1, 8), -(2 ** 61)), torch.full((1, 8), 2 ** 61), 0)


def test_output_rounding_is_fl32_of_acc_then_scale():
    acc_val = 2 ** 24 + 1                                           # not a float32: rounds to even
    w = torch.tensor([[acc_val]])
    r = aref.adder_linear(torch.zeros(1, 1, dtype=torch.int64), w, 2)
    assert r.out.item() == -float(2 ** 24) / 4


# ---------------------------------------------------------------------------------------------- training path
@settings(max_examples=examples(25), deadline=None)
@given(conv_cases())
def test_training_forward_matches_float64_within_bound(c):
    g = torch.Generator().manual_seed(c["seed"])
    x = torch.randn((c["n"], c["cin"]) + c["hw"], generator=g)
    w = torch.randn((c["cout"], c["cin"] // c["groups"]) + c["k"], generator=g)
    y = adder_conv2d_train(x, w, c["stride"], c["pad"], c["dil"], c["groups"])
    ref = aref.adder_conv2d_float(x, w, None, c["stride"], c["pad"], c["dil"], c["groups"])
    k = w[0].numel()
    bound = aref.adder_float_error_bound(ref, k, ref)
    assert bool(((y.double() - ref.double()).abs() <= bound).all())


def _adder_formula_grads(x, w, gy, stride, pad, dil, groups):
    """AdderNet's rules written out on the unfolded input: gw = Σ g (x - w), gx = Σ g HardTanh(w - x)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = F.pad(x, (pad[1], pad[3], pad[0], pad[2]))
    cols = F.unfold(xp, (kh, kw), dilation=dil, stride=stride)
    p = cols.shape[-1]
    cols = cols.reshape(n, groups, cg * kh * kw, p)
    wm = w.reshape(groups, o // groups, cg * kh * kw)
    gm = gy.reshape(n, groups, o // groups, p)
    diff = cols.unsqueeze(2) - wm.unsqueeze(0).unsqueeze(-1)                    # (N, G, O/G, K, P)
    gw = (gm.unsqueeze(3) * diff).sum(dim=(0, 4)).reshape(w.shape)
    gcols = (gm.unsqueeze(3) * (-diff).clamp(-1, 1)).sum(dim=2).reshape(n, groups * cg * kh * kw, p)
    gxp = F.fold(gcols, xp.shape[-2:], (kh, kw), dilation=dil, stride=stride)
    return gxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd], gw


@settings(max_examples=examples(25), deadline=None)
@given(conv_cases())
def test_gradients_follow_addernet_rules(c):
    g = torch.Generator().manual_seed(c["seed"])
    x = torch.randn((c["n"], c["cin"]) + c["hw"], generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn((c["cout"], c["cin"] // c["groups"]) + c["k"], generator=g, dtype=torch.float64,
                    requires_grad=True)
    y = adder_conv2d_train(x, w, c["stride"], c["pad"], c["dil"], c["groups"])
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(gy)
    gx, gw = _adder_formula_grads(x.detach(), w.detach(), gy, c["stride"], c["pad"], c["dil"], c["groups"])
    torch.testing.assert_close(w.grad, gw, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, gx, rtol=1e-10, atol=1e-10)


def test_linear_gradients_and_adaptive_lr():
    torch.manual_seed(0)
    layer = sc.nn.LinearAdder(5, 3, config=sc.AdderConfig(adaptive_lr=0.2)).double()
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    w = layer.weight.detach()
    raw_gw = (gy.unsqueeze(2) * (x.detach().unsqueeze(1) - w.unsqueeze(0))).sum(0)
    torch.testing.assert_close(layer.weight.grad, adaptive_grad_scale(raw_gw, 0.2))
    assert math.isclose(float(layer.weight.grad.norm()), 0.2 * math.sqrt(15), rel_tol=1e-9)
    gx = (gy.unsqueeze(2) * (w.unsqueeze(0) - x.detach().unsqueeze(1)).clamp(-1, 1)).sum(1)
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(layer.bias.grad, gy.sum(0))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)            # any optimizer applies the scaled gradient
    before = layer.weight.detach().clone()
    opt.step()
    torch.testing.assert_close(layer.weight.detach(), before - 0.1 * adaptive_grad_scale(raw_gw, 0.2))


def test_training_forward_memory_is_tap_sized():
    """The saved state of the training conv is its input and weight, not a KH*KW-times-larger unfold."""
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    w = torch.randn(8, 8, 5, 5, requires_grad=True)
    y = adder_conv2d_train(x, w, 1, 2)
    saved = y.grad_fn.saved_tensors
    assert sum(t.numel() for t in saved) == x.numel() + w.numel()


# ---------------------------------------------------------------------------------------------- layers
@pytest.mark.parametrize("rounding", ["nearest", "floor"])
@pytest.mark.parametrize("wbits", [None, 6])
def test_layer_exact_forward_equals_reference_and_fake_quant(rounding, wbits):
    torch.manual_seed(1)
    cfg = sc.AdderConfig(act_bits=(3, 5), weight_bits=wbits, rounding=rounding)
    conv = sc.nn.Conv2dAdder(4, 6, 3, stride=2, padding=1, config=cfg).eval()
    x = torch.randn(2, 4, 9, 9) * 2
    w_q = conv.integer_weights()
    lo, hi = cfg.weight_int_range
    assert int(w_q.min()) >= lo and int(w_q.max()) <= hi
    x_q = sc.quant.to_fixed(x, 3, 5, rounding)
    ref = aref.adder_conv2d(x_q, w_q, 5, conv.bias.detach(), 2, 1)
    with sc.reference.exact(conv):
        y_exact = conv(x)
    assert torch.equal(y_exact, ref.out)
    y_fake = conv(x)                                                 # float32 fake-quant: same values
    torch.testing.assert_close(y_fake, y_exact, rtol=1e-6, atol=1e-4)


def test_layer_validation():
    with pytest.raises(ValueError, match="weight_bits needs act_bits"):
        sc.AdderConfig(weight_bits=8)
    with pytest.raises(ValueError, match="weight_bits must be in"):
        sc.AdderConfig(act_bits=(3, 5), weight_bits=5)
    with pytest.raises(ValueError, match="adaptive_lr"):
        sc.AdderConfig(adaptive_lr=-1)
    with pytest.raises(ValueError, match="padding_mode"):
        sc.nn.Conv2dAdder(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="divisible"):
        sc.nn.Conv2dAdder(3, 2, 3, groups=2)
    with pytest.raises(ValueError, match="ShiftConfig"):
        sc.ShiftAddConfig(shift=sc.AdderConfig())


def test_state_dict_round_trip_and_deepcopy():
    import copy

    layer = sc.nn.Conv2dAdder(2, 3, 3, padding="same", config=sc.AdderConfig(adaptive_lr=0.1))
    other = copy.deepcopy(layer)
    other.load_state_dict(layer.state_dict())
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(layer(x), other(x))


# ---------------------------------------------------------------------------------------------- conversion
def test_convert_addernet_depth_and_filter():
    model = get_model("simple_conv")
    sc.convert(model, sc.AdderConfig(act_bits=(3, 5), depth=3), filter_fn=lambda m, n: n != "conv2")
    assert isinstance(model.conv1, sc.nn.Conv2dAdder) and isinstance(model.conv2, nn.Conv2d)
    assert isinstance(model.fc1, sc.nn.LinearAdder) and type(model.fc2) is nn.Linear
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_convert_depth_zero_preserves_outputs():
    torch.manual_seed(0)
    model = get_model("simple_conv").eval()
    x = torch.randn(2, 1, 28, 28)
    y = model(x)
    for cfg in (sc.AdderConfig(depth=0), sc.ShiftAddConfig(depth=0)):
        assert torch.equal(sc.convert(model, cfg)(x), y)


def test_convert_shiftaddnet_structure_and_shift_half():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    ref_shift = sc.convert(nn.Sequential(conv), sc.ShiftConfig(mode="PS", weight_bits=4))[0]
    torch.manual_seed(0)
    conv2 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    cfg = sc.ShiftAddConfig(shift=sc.ShiftConfig(mode="PS", weight_bits=4), adder=sc.AdderConfig(act_bits=(3, 5)))
    pair = sc.convert(nn.Sequential(conv2), cfg)[0]
    assert isinstance(pair, ShiftAddConv2d)
    assert pair.shift.stride == (2, 2) and pair.shift.bias is None
    a = pair.adder
    assert (a.in_channels, a.out_channels, a.kernel_size, a.stride) == (8, 8, (3, 3), (1, 1))
    assert a.explicit_padding() == (1, 1, 1, 1) and a.bias is not None
    assert torch.equal(a.bias.detach(), conv2.bias.detach())
    x = torch.randn(2, 3, 8, 8)
    # the shift half is exactly the ShiftConfig conversion of the conv (without its bias)
    torch.testing.assert_close(pair.shift(x) + conv.bias.detach().view(-1, 1, 1), ref_shift(x))
    y = pair(x)
    assert y.shape == (2, 8, 4, 4)


def test_zoo_models_build_and_run():
    for name in ("resnet20_adder", "resnet20_shiftadd"):
        m = get_model(name)
        assert isinstance(m.conv1, nn.Conv2d) and isinstance(m.fc, nn.Linear)
        layers = list(sc.adder.adder_layers(m))
        assert len(layers) == 18
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


# ---------------------------------------------------------------------------------------------- zero-free
def test_zero_free_config_ranges():
    for b in range(2, 9):
        for mode in ("Q", "PS"):
            lo, hi = sc.ShiftConfig(mode=mode, weight_bits=b, zero_free=True).shift_bounds
            assert hi - lo + 1 == 2 ** (b - 1)
    assert sc.ShiftConfig(mode="PS", weight_bits=5).shift_bounds == (-14, 0)
    with pytest.raises(ValueError, match="zero_free"):
        sc.ShiftConfig(zero_free=1)


def test_zero_free_q_and_ps_have_no_zero():
    w = torch.tensor([0.0, -0.0, 0.3, -0.3, 1e-9])
    _, sign = sc.quant.q_round(w, -15, 0, zero_free=True)
    assert sign.tolist() == [1, 1, 1, -1, 1]
    _, sign = sc.quant.q_round(w, -15, 0)
    assert sign.tolist() == [0, 0, 1, -1, 1]
    s = torch.tensor([0.0, 0.2, -0.2, -0.6, 0.6, -0.0])
    _, sign = sc.quant.ps_round(torch.zeros(6), s, -15, 0, zero_free=True)
    assert sign.tolist() == [1, 1, -1, -1, 1, 1]
    wq = sc.quant.ps_fake_weight(torch.full((6,), -2.0), s, -15, 0, zero_free=True)
    assert wq.tolist() == [0.25, 0.25, -0.25, -0.25, 0.25, 0.25]


@pytest.mark.parametrize("mode", ["Q", "PS"])
def test_zero_free_layers_pack_in_b_bits_and_match_reference(mode):
    from passes.packing import pack_codes

    torch.manual_seed(0)
    b = 4
    cfg = sc.ShiftConfig(mode=mode, weight_bits=b, zero_free=True, act_bits=(3, 5))
    conv = nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight[0, 0] = 0.0                                      # exact zeros become +2**lo
    layer = sc.convert(nn.Sequential(conv), cfg)[0].eval()
    shift, sign = layer.integer_weights()
    assert bool((sign != 0).all())
    lo, hi = cfg.shift_bounds
    codes = (sign.to(torch.int16) * (shift.to(torch.int16) - lo + 1)).to(torch.int8).numpy()
    packed = pack_codes(codes)
    assert len(packed.codebook) <= 2 ** b and packed.bits <= b
    x = torch.randn(2, 4, 6, 6)
    with sc.reference.exact(layer):
        y = layer(x)
    torch.testing.assert_close(layer.train()(x), y, rtol=1e-6, atol=1e-5)
