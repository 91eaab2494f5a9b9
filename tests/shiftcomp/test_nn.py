"""Shift layers: fake-quant forward vs plain PyTorch, exact mode vs the reference, gradients, state_dict,
and the original DeepShift bugs (sign 0, H/W padding, no bias, groups, reload)."""
from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis_support import examples

from shiftcomp import ShiftConfig, reference
from shiftcomp.nn import Conv2dShift, LinearShift, ShiftLayer, named_shift_layers, shift_layers, shift_weight_decay
from shiftcomp.quant import LN2, act_int_range, q_round, to_fixed

SETTINGS = settings(max_examples=examples(30), deadline=None)
U = 2.0 ** -24                                     # float32 unit roundoff


def rounded_weight(layer: ShiftLayer) -> torch.Tensor:
    """sign * 2**shift computed independently from the integer weights (float64, exact)."""
    shift, sign = layer.integer_weights()
    return sign.double() * torch.tensor(2.0).double() ** shift.double()


def fq_input(x: torch.Tensor, cfg: ShiftConfig) -> torch.Tensor:
    if cfg.act_bits is None:
        return x
    I, F_ = cfg.act_bits
    return to_fixed(x, I, F_, cfg.rounding).float() * 2.0 ** -F_


def summation_bound(absx: torch.Tensor, absw: torch.Tensor, k: int, op) -> torch.Tensor:
    """Standard float32 dot-product error bound: |fl(Σ) - Σ| <= γ_k Σ|x||w|, γ_k = k u / (1 - k u),
    plus one more rounding for each of the two results compared (exact ref rounded once, bias add)."""
    gamma = (k + 2) * U / (1 - (k + 2) * U)
    return gamma * op(absx.double(), absw.double()) + 1e-30


configs = st.builds(
    ShiftConfig,
    mode=st.sampled_from(["Q", "PS"]),
    weight_bits=st.integers(2, 6),       # 7-8 bit ranges can exceed the int64 accumulator (tested below)
    act_bits=st.one_of(st.none(), st.tuples(st.integers(1, 6), st.integers(0, 12))),
    rounding=st.sampled_from(["nearest", "floor"]),
)


# ------------------------------------------------------------------------------------------- construction
def test_parameters_per_mode():
    q = LinearShift(4, 3)
    assert {n for n, _ in q.named_parameters()} == {"weight", "bias"}
    assert q.weight.shape == (3, 4)
    ps = Conv2dShift(4, 6, 3, groups=2, bias=False, config=ShiftConfig(mode="PS", freeze_sign=True))
    assert {n for n, _ in ps.named_parameters()} == {"shift", "sign"}
    assert ps.shift.shape == ps.sign.shape == (6, 2, 3, 3) and ps.bias is None
    assert not ps.sign.requires_grad and ps.shift.requires_grad


def test_ps_init_ranges():
    torch.manual_seed(0)
    cfg = ShiftConfig(mode="PS", weight_bits=5)
    lin = LinearShift(50, 40, config=cfg)
    assert lin.shift.min() >= -14 and lin.shift.max() <= 0 and lin.shift.min() < -12 and lin.shift.max() > -2
    conv = Conv2dShift(8, 8, 3, config=cfg)
    assert conv.shift.min() >= -10 and conv.shift.max() <= -1
    assert conv.sign.min() >= -1 and conv.sign.max() <= 1
    narrow = Conv2dShift(8, 8, 3, config=ShiftConfig(mode="PS", shift_range=(-4, 2)))
    assert narrow.shift.min() >= -4 and narrow.shift.max() <= -1            # U(-10, -1) clipped into range
    pos = Conv2dShift(2, 2, 1, config=ShiftConfig(mode="PS", shift_range=(0, 3)))
    assert torch.all(pos.shift == 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"padding_mode": "reflect"}, "padding_mode"),
    ({"padding": "full"}, "same' or 'valid"),
    ({"padding": "same", "stride": 2}, "strided"),
    ({"groups": 3}, "divisible"),
    ({"kernel_size": 0}, "kernel_size"),
    ({"stride": (1, 0)}, "stride"),
    ({"padding": -1}, "padding"),
])
def test_conv_constructor_errors(kwargs, match):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Conv2dShift(**args)


def test_extra_repr():
    r = repr(Conv2dShift(4, 8, 3, stride=2, padding=1, groups=4, bias=False,
                         config=ShiftConfig(mode="PS", act_bits=(3, 5))))
    for s in ("4, 8", "kernel_size=(3, 3)", "stride=(2, 2)", "padding=(1, 1)", "groups=4", "bias=False", "mode=PS",
              "shift_range=(-14, 0)", "act_bits=(3, 5)", "rounding=nearest"):
        assert s in r, (s, r)
    r = repr(LinearShift(3, 2))
    assert "in_features=3, out_features=2" in r and "float activations" in r
    assert "padding='same'" in repr(Conv2dShift(2, 2, 3, padding="same"))


# ------------------------------------------------------------------------------------------- forward
@SETTINGS
@given(cfg=configs, seed=st.integers(0, 2 ** 31), bias=st.booleans())
def test_linear_fake_forward_is_torch_with_rounded_weights(cfg, seed, bias):
    torch.manual_seed(seed)
    layer = LinearShift(7, 5, bias=bias, config=cfg)
    x = torch.randn(3, 7) * 2
    w = rounded_weight(layer).float()
    want = F.linear(fq_input(x, cfg), w, layer.bias)
    assert torch.equal(layer(x), want)
    assert torch.equal(layer.quantized_weight().detach(), w)


conv_geoms = st.fixed_dictionaries({
    "groups": st.integers(1, 3), "cg": st.integers(1, 2), "og": st.integers(1, 2),
    "k": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "stride": st.integers(1, 2), "dilation": st.integers(1, 2),
    "padding": st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)), st.just("valid"),
                         st.just("same")),
    "bias": st.booleans(), "hw": st.tuples(st.integers(5, 8), st.integers(5, 8)),
})


def make_conv(g: dict, cfg: ShiftConfig) -> Conv2dShift:
    stride = 1 if g["padding"] == "same" else g["stride"]
    return Conv2dShift(g["cg"] * g["groups"], g["og"] * g["groups"], g["k"], stride=stride, padding=g["padding"],
                       dilation=g["dilation"], groups=g["groups"], bias=g["bias"], config=cfg)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@SETTINGS
@given(cfg=configs, geom=conv_geoms, seed=st.integers(0, 2 ** 31))
def test_conv_fake_exact_and_reference(cfg, geom, seed):
    """fake path == torch with rounded weights; exact mode == reference (bit for bit); fake within the float32
    summation bound of the exact result."""
    torch.manual_seed(seed)
    layer = make_conv(geom, cfg)
    x = torch.randn(2, layer.in_channels, *geom["hw"]) * 2
    w = rounded_weight(layer)
    args = (layer.stride, layer.padding, layer.dilation, layer.groups)
    xin = fq_input(x, cfg)
    y = layer(x)
    assert torch.equal(y, F.conv2d(xin, w.float(), layer.bias, *args))

    layer.eval()
    layer.exact = True
    ye = layer(x)
    assert ye.dtype == torch.float32 and ye.shape == y.shape
    shift, sign = layer.integer_weights()
    pad = layer.explicit_padding(*geom["hw"])
    bias = None if layer.bias is None else layer.bias.detach()
    if cfg.act_bits is None:
        ref = reference.shift_conv2d_float(x, shift, sign, bias, layer.stride, pad, layer.dilation, layer.groups)
    else:
        I, F_ = cfg.act_bits
        ref = reference.shift_conv2d(to_fixed(x, I, F_, cfg.rounding), shift, sign, F_, bias, layer.stride, pad,
                                     layer.dilation, layer.groups).out
        assert torch.equal(layer.exact_result(x).out, ref)
    assert torch.equal(ye, ref)
    # exact value in float64 (products and sums of these small magnitudes are exact in float64)
    exact64 = F.conv2d(xin.double(), w, None, *args)
    k = layer.fan_in
    bound = summation_bound(xin.abs(), w.abs(), k, lambda a, b: F.conv2d(a, b, None, *args))
    bias64 = 0 if layer.bias is None else layer.bias.detach().double().view(1, -1, 1, 1)
    bound = bound + U * (exact64.abs() + (bias64.abs() if layer.bias is not None else 0)) * 2
    assert torch.all((y.double() - (exact64 + bias64)).abs() <= bound)
    assert torch.all((ye.double() - (exact64 + bias64)).abs() <= bound)
    # same padding really preserves H, W
    if geom["padding"] == "same":
        assert y.shape[-2:] == x.shape[-2:]


@SETTINGS
@given(cfg=configs, seed=st.integers(0, 2 ** 31))
def test_linear_exact_mode_equals_reference(cfg, seed):
    torch.manual_seed(seed)
    layer = LinearShift(9, 4, config=cfg).eval()
    x = torch.randn(2, 3, 9)
    shift, sign = layer.integer_weights()
    with reference.exact(layer):
        ye = layer(x)
    if cfg.act_bits is None:
        ref = reference.shift_linear_float(x, shift, sign, layer.bias)
    else:
        I, F_ = cfg.act_bits
        ref = reference.shift_linear(to_fixed(x, I, F_, cfg.rounding), shift, sign, F_, layer.bias).out
    assert torch.equal(ye, ref) and ye.shape == (2, 3, 4)
    assert not layer.exact


def test_exact_is_ignored_in_training_mode():
    torch.manual_seed(0)
    layer = LinearShift(5, 3, config=ShiftConfig(act_bits=(3, 5)))
    layer.exact = True
    x = torch.randn(4, 5, requires_grad=True)
    y = layer(x)                                   # training mode: the differentiable fake-quant path
    assert y.requires_grad
    y.sum().backward()
    assert layer.weight.grad is not None


def test_float_activation_exact_mode():
    torch.manual_seed(1)
    layer = Conv2dShift(3, 4, 3, padding=1, config=ShiftConfig(mode="PS")).eval()
    x = torch.randn(2, 3, 6, 6)
    layer.exact = True
    w = rounded_weight(layer)
    want = F.conv2d(x.double(), w, None, 1, 1).float() + layer.bias.detach().view(1, -1, 1, 1)
    assert torch.equal(layer(x), want)


def test_exact_mode_refuses_accumulator_overflow():
    layer = LinearShift(64, 2, config=ShiftConfig(mode="PS", weight_bits=8, act_bits=(16, 16))).eval()
    with torch.no_grad():
        layer.sign.fill_(1.0)
        layer.shift.fill_(0.0)
        layer.shift[:, 0] = -126.0
    layer.exact = True
    with pytest.raises(ValueError, match="2\\*\\*63"):
        layer(torch.full((1, 64), 1000.0))
    layer.exact = False
    assert torch.isfinite(layer(torch.full((1, 64), 1000.0))).all()      # the float path still runs


def test_unbatched_conv_input():
    torch.manual_seed(2)
    layer = Conv2dShift(2, 3, 3, padding=1, config=ShiftConfig(act_bits=(4, 6)))
    x = torch.randn(2, 5, 5)
    assert torch.equal(layer(x), layer(x.unsqueeze(0))[0])
    layer.eval().exact = True
    assert torch.equal(layer(x), layer(x.unsqueeze(0))[0])


# ------------------------------------------------------------------------------------------- gradients
def test_q_layer_gradient_is_straight_through():
    torch.manual_seed(3)
    layer = LinearShift(6, 4, config=ShiftConfig(mode="Q", act_bits=(4, 8), act_grad="identity"))
    x = torch.randn(5, 6, requires_grad=True)
    layer(x).pow(2).sum().backward()
    wq = layer.quantized_weight().detach().requires_grad_(True)
    xq = fq_input(x.detach(), layer.config).requires_grad_(True)
    F.linear(xq, wq, layer.bias.detach()).pow(2).sum().backward()
    assert torch.equal(layer.weight.grad, wq.grad)          # grad(w) = grad(w_q)
    assert torch.equal(x.grad, xq.grad)                     # identity activation STE


def test_ps_layer_gradients_and_in_place_clamp():
    torch.manual_seed(4)
    cfg = ShiftConfig(mode="PS", shift_range=(-6, 0))
    layer = Conv2dShift(2, 3, 3, padding=1, config=cfg)
    with torch.no_grad():
        layer.shift[0, 0, 0, 0] = -9.0                       # out of range: clamped in place by a training forward
        layer.shift[0, 0, 0, 1] = 2.0
    x = torch.randn(2, 2, 5, 5)
    out = layer(x)
    assert layer.shift[0, 0, 0, 0] == -6.0 and layer.shift[0, 0, 0, 1] == 0.0
    out.pow(2).sum().backward()
    wq = layer.quantized_weight().detach().requires_grad_(True)
    F.conv2d(x, wq, layer.bias.detach(), 1, 1).pow(2).sum().backward()
    shift, sign = layer.integer_weights()
    expect = wq.grad * sign.float() * torch.exp2(shift.float()) * LN2
    assert torch.allclose(layer.shift.grad, expect, rtol=2 ** -22, atol=0)
    assert torch.equal(layer.sign.grad, wq.grad)
    layer.eval()
    with torch.no_grad():
        layer.shift[0, 0, 0, 0] = -9.0
    layer(x)
    assert layer.shift[0, 0, 0, 0] == -9.0                  # eval forwards do not touch parameters


def test_shift_weight_decay_and_iterators():
    torch.manual_seed(5)
    m = torch.nn.Sequential(LinearShift(4, 3, config=ShiftConfig(mode="PS", shift_range=(-5, 0))), torch.nn.ReLU(),
                            LinearShift(3, 2), LinearShift(2, 2, config=ShiftConfig(mode="PS")))
    assert [n for n, _ in named_shift_layers(m)] == ["0", "2", "3"]
    assert list(shift_layers(m)) == [m[0], m[2], m[3]]
    wd = 1e-3
    val = shift_weight_decay(m, wd)
    want = 0.0
    for layer in (m[0], m[3]):
        lo, hi = layer.shift_bounds
        want += sum(4.0 ** round(min(max(s, lo), hi)) for s in layer.shift.flatten().tolist())
    assert math.isclose(val.item(), wd * 0.5 * want, rel_tol=1e-6)
    val.backward()
    s_q = torch.round(m[0].shift.detach().clamp(-5, 0))
    assert torch.allclose(m[0].shift.grad, wd * torch.exp2(2 * s_q) * LN2, rtol=1e-6)
    assert float(shift_weight_decay(torch.nn.Linear(2, 2), wd)) == 0.0


# ------------------------------------------------------------------------------------------- from_float
@pytest.mark.parametrize("mode", ["Q", "PS"])
def test_from_float_carries_weights(mode):
    torch.manual_seed(6)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=(1, 0), dilation=1, groups=2)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 0.0
    cfg = ShiftConfig(mode=mode)
    layer = Conv2dShift.from_float(conv, cfg)
    assert (layer.stride, layer.padding, layer.groups) == ((2, 2), (1, 0), 2)
    lo, hi = cfg.shift_bounds
    shift, sign = q_round(conv.weight, lo, hi)
    s2, g2 = layer.integer_weights()
    assert torch.equal(s2, shift) and torch.equal(g2, sign)
    assert g2[0, 0, 0, 0] == 0 and s2[0, 0, 0, 0] == lo
    if mode == "Q":
        assert torch.equal(layer.weight, conv.weight)
    else:
        assert torch.equal(layer.shift, shift.float()) and torch.equal(layer.sign, sign.float())
    assert torch.equal(layer.bias, conv.bias)
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        conv.weight.copy_(sign.float() * torch.exp2(shift.float()))
    assert torch.allclose(layer(x), conv(x), rtol=0, atol=0)
    lin = torch.nn.Linear(5, 3, bias=False).double().eval()
    ll = LinearShift.from_float(lin, cfg)
    assert ll.bias is None and not ll.training and next(ll.parameters()).dtype == torch.float64
    with pytest.raises(ValueError, match="padding_mode"):
        Conv2dShift.from_float(torch.nn.Conv2d(2, 2, 3, padding_mode="circular"), cfg)
    with pytest.raises(TypeError):
        LinearShift.from_float(conv, cfg)


# ------------------------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("mode", ["Q", "PS"])
def test_state_dict_round_trip(mode):
    torch.manual_seed(7)
    cfg = ShiftConfig(mode=mode, act_bits=(4, 6), weight_bits=4)
    a = torch.nn.Sequential(Conv2dShift(3, 4, 3, padding=1, config=cfg), torch.nn.ReLU(), torch.nn.Flatten(),
                            LinearShift(4 * 5 * 5, 3, config=cfg))
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    x = torch.randn(2, 3, 5, 5)
    for _ in range(3):                                      # train a bit: float params off the integer grid
        opt.zero_grad()
        a(x).pow(2).sum().backward()
        opt.step()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(123)
    b = torch.nn.Sequential(Conv2dShift(3, 4, 3, padding=1, config=cfg), torch.nn.ReLU(), torch.nn.Flatten(),
                            LinearShift(4 * 5 * 5, 3, config=cfg))
    b.load_state_dict(torch.load(buf))
    for la, lb in zip(shift_layers(a), shift_layers(b)):    # reloaded weights: identical integer weights
        for ta, tb in zip(la.integer_weights(), lb.integer_weights()):
            assert torch.equal(ta, tb)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))
    with reference.exact(a), reference.exact(b):
        assert torch.equal(a(x), b(x))


# ------------------------------------------------------------------------------------------- original bugs
@pytest.mark.parametrize("exact", [False, True])
def test_bug_sign_zero_is_zero_weight(exact):
    """DeepShift's CPU conv kernel treated sign 0 as +1."""
    layer = Conv2dShift(2, 3, 3, padding=1, config=ShiftConfig(mode="PS", act_bits=(4, 8))).eval()
    with torch.no_grad():
        layer.sign.fill_(0.3)                               # rounds to 0 -> every weight is zero
    layer.exact = exact
    y = layer(torch.randn(1, 2, 4, 4))
    assert torch.equal(y, layer.bias.detach().view(1, 3, 1, 1).expand_as(y))
    shift, sign = layer.integer_weights()
    assert torch.all(sign == 0) and torch.all(shift == layer.shift_bounds[0])


@pytest.mark.parametrize("exact", [False, True])
def test_bug_padding_applies_to_h_and_w(exact):
    """DeepShift's wrapper padded W only (8x8 with padding 1 gave 6x8)."""
    torch.manual_seed(8)
    layer = Conv2dShift(1, 1, 3, padding=1, bias=False, config=ShiftConfig(act_bits=(4, 8))).eval()
    layer.exact = exact
    x = torch.randn(1, 1, 8, 8)
    y = layer(x)
    assert y.shape == (1, 1, 8, 8)
    want = F.conv2d(fq_input(x, layer.config), rounded_weight(layer).float(), None, 1, 1)
    assert torch.allclose(y, want, rtol=0, atol=1e-5)
    pad_h_only = Conv2dShift(1, 1, 3, padding=(2, 0), config=ShiftConfig(act_bits=(4, 8))).eval()
    pad_h_only.exact = exact
    assert pad_h_only(x).shape == (1, 1, 10, 6)


@pytest.mark.parametrize("exact", [False, True])
def test_bug_no_bias_works(exact):
    torch.manual_seed(9)
    for layer in (LinearShift(4, 3, bias=False, config=ShiftConfig(act_bits=(3, 5))),
                  Conv2dShift(2, 2, 1, bias=False, config=ShiftConfig(act_bits=(3, 5)))):
        layer.eval().exact = exact
        x = torch.randn(2, 4) if isinstance(layer, LinearShift) else torch.randn(1, 2, 3, 3)
        y = layer(x)
        w = rounded_weight(layer).float()
        want = F.linear(fq_input(x, layer.config), w) if isinstance(layer, LinearShift) else F.conv2d(
            fq_input(x, layer.config), w)
        assert torch.allclose(y, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("exact", [False, True])
def test_bug_groups_work(exact):
    """DeepShift segfaulted on groups (their issue #26); depthwise and grouped convs must equal F.conv2d."""
    torch.manual_seed(10)
    for groups, cin, cout in ((4, 4, 4), (4, 4, 8), (2, 4, 6)):
        layer = Conv2dShift(cin, cout, 3, stride=2, padding=1, groups=groups,
                            config=ShiftConfig(mode="PS", act_bits=(4, 8))).eval()
        layer.exact = exact
        x = torch.randn(2, cin, 7, 7)
        want = F.conv2d(fq_input(x, layer.config), rounded_weight(layer).float(), layer.bias, 2, 1, 1, groups)
        assert torch.allclose(layer(x), want, rtol=0, atol=1e-5)


def test_bug_q_zero_weight_stays_zero():
    lin = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.5, -1e-9]]))
    layer = LinearShift.from_float(lin, ShiftConfig(mode="Q"))
    assert layer.quantized_weight().tolist() == [[0.0, 0.5, -(2.0 ** -15)]]
    shift, sign = layer.integer_weights()
    assert sign.tolist() == [[0, 1, -1]] and shift.tolist() == [[-15, -1, -15]]


def test_act_range_used_by_layer():
    layer = LinearShift(1, 1, bias=False, config=ShiftConfig(act_bits=(2, 2), shift_range=(0, 0))).eval()
    with torch.no_grad():
        layer.weight.fill_(1.0)
    qmin, qmax = act_int_range(2, 2)
    x = torch.tensor([[100.0], [-100.0], [0.375], [0.125]])        # clamp both sides; ties to even
    assert layer(x).flatten().tolist() == [qmax / 4, qmin / 4, 0.5, 0.0]
    layer.exact = True
    assert layer(x).flatten().tolist() == [qmax / 4, qmin / 4, 0.5, 0.0]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("k, d", [((2, 4), (1, 1)), ((3, 2), (2, 3)), ((4, 4), (1, 2))])
def test_same_padding_matches_torch(k, d):
    """'same' with even kernels: PyTorch puts the extra zero at the bottom/right; exact mode must agree."""
    torch.manual_seed(11)
    layer = Conv2dShift(2, 3, k, padding="same", dilation=d, config=ShiftConfig(act_bits=(4, 8))).eval()
    th, tw = d[0] * (k[0] - 1), d[1] * (k[1] - 1)
    assert layer.explicit_padding(9, 8) == (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    x = torch.randn(1, 2, 9, 8)
    y = layer(x)
    layer.exact = True
    assert y.shape == layer(x).shape == (1, 3, 9, 8)
    assert torch.allclose(layer(x), y, rtol=0, atol=1e-5)
