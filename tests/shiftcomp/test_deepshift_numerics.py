"""numerics="deepshift": the original DeepShift arithmetic (activation clamp at 2**(I-1) - 1, PS linear layers
with float inputs, conv bias floored to Q(I, F)) in the layers, the reference and the compiled kernels."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis_support import examples

from shiftcomp.compiler import compile
from shiftcomp.config import ShiftConfig
from shiftcomp.nn import Conv2dShift, LinearShift
from shiftcomp.reference import exact


def original_round_to_fixed(x: torch.Tensor, i_bits: int, f_bits: int) -> torch.Tensor:
    """The original code's formula, written out independently of shiftcomp.deepshift."""
    delta = 2.0 ** -f_bits
    return torch.clamp(torch.floor(x / delta) * delta, -(2.0 ** (i_bits - 1)), 2.0 ** (i_bits - 1) - 1)


def original_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """What DeepShift's own layer computes (use_kernel=False) with the same integer weights, in float64."""
    shift, sign = layer.integer_weights()
    w = (sign.double() * torch.exp2(shift.double()))
    i_bits, f_bits = layer.config.act_bits or (None, None)
    if isinstance(layer, Conv2dShift):
        xq = original_round_to_fixed(x, i_bits, f_bits).double()
        b = None if layer.bias is None else original_round_to_fixed(layer.bias.detach(), i_bits, f_bits).double()
        return F.conv2d(xq, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    b = None if layer.bias is None else layer.bias.detach().double()
    if layer.config.mode == "PS":                       # PS linear: neither input nor bias quantised
        return F.linear(x.double(), w, b)
    return F.linear(original_round_to_fixed(x, i_bits, f_bits).double(), w, b)   # Q linear: raw bias


def _exact(m, x):
    with exact(m), torch.no_grad():
        return m(x)


@pytest.mark.parametrize("mode", ["Q", "PS"])
@pytest.mark.parametrize("act", [(3, 5), (2, 4), (16, 16)])
def test_conv_layer_matches_original_formula(mode: str, act: tuple[int, int]) -> None:
    torch.manual_seed(0)
    cfg = ShiftConfig(mode=mode, act_bits=act, rounding="floor", numerics="deepshift")
    m = Conv2dShift(3, 5, 3, padding=1, config=cfg).eval()
    with torch.no_grad():
        m.bias.uniform_(-3, 3)
    x = torch.randn(2, 3, 6, 6) * 4                    # many values beyond 2**(I-1) - 1 for small I
    want = original_forward(m, x)
    with torch.no_grad():
        got_fake = m(x).double()
    got_exact = _exact(m, x).double()
    tol = 1e-5 * (1 + want.abs().max())
    assert (got_fake - want).abs().max() <= tol
    assert (got_exact - want).abs().max() <= tol


def test_exact_numerics_differ_where_documented() -> None:
    """Same weights, exact numerics: the clamp (3 5: 3.96875 vs 3.0) and the bias rounding change the output."""
    torch.manual_seed(0)
    ds = Conv2dShift(1, 2, 1, config=ShiftConfig(act_bits=(3, 5), rounding="floor", numerics="deepshift")).eval()
    ex = Conv2dShift(1, 2, 1, config=ShiftConfig(act_bits=(3, 5), rounding="floor")).eval()
    ex.load_state_dict(ds.state_dict())
    x = torch.full((1, 1, 1, 1), 100.0)
    s, g = ds.integer_weights()
    w = (g.double() * torch.exp2(s.double())).view(-1)
    assert torch.allclose(_exact(ds, x).view(-1).double(), 3.0 * w + original_round_to_fixed(ds.bias.detach(), 3, 5).double())
    assert torch.allclose(_exact(ex, x).view(-1).double(), 3.96875 * w + ex.bias.detach().double())


def test_ps_linear_runs_with_float_activations_and_q_linear_keeps_its_bias() -> None:
    torch.manual_seed(1)
    ps = LinearShift(6, 4, config=ShiftConfig(mode="PS", act_bits=(3, 5), numerics="deepshift"))
    q = LinearShift(6, 4, config=ShiftConfig(mode="Q", act_bits=(3, 5), rounding="floor", numerics="deepshift"))
    assert ps.config.act_bits is None and q.config.act_bits == (3, 5)
    x = torch.randn(3, 6) * 5
    for m in (ps.eval(), q.eval()):
        want = original_forward(m, x)
        assert (_exact(m, x).double() - want).abs().max() <= 1e-5 * (1 + want.abs().max())


def test_i_equal_one_is_refused() -> None:
    with pytest.raises(ValueError, match="sign"):
        Conv2dShift(1, 1, 1, config=ShiftConfig(act_bits=(1, 4), numerics="deepshift"))


def test_unknown_numerics_is_refused() -> None:
    with pytest.raises(ValueError, match="numerics"):
        ShiftConfig(numerics="original")


@pytest.mark.bitexact
@settings(max_examples=examples(6), deadline=None)
@given(mode=st.sampled_from(["Q", "PS"]), i_bits=st.integers(2, 8), f_bits=st.integers(0, 10),
       scale=st.sampled_from([0.5, 4.0, 300.0]), seed=st.integers(0, 2 ** 16))
def test_compiled_conv_equals_reference_bit_exact(mode, i_bits, f_bits, scale, seed) -> None:
    torch.manual_seed(seed)
    cfg = ShiftConfig(mode=mode, act_bits=(i_bits, f_bits), rounding="floor", numerics="deepshift")
    m = Conv2dShift(2, 3, 3, padding=1, config=cfg).eval()
    with torch.no_grad():
        m.bias.uniform_(-2.0 ** i_bits, 2.0 ** i_bits)
    x = torch.randn(1, 2, 5, 5) * scale
    cm = compile(m, x)
    assert cm.audit.datapath_multiplies == 0
    assert torch.equal(cm(x), _exact(m, x))


@pytest.mark.bitexact
def test_compiled_wide_format_clamp_and_linear() -> None:
    """Q(16, 16) (the int64 clamp path) and a Q linear layer; PS linear compiles to the float kernel."""
    torch.manual_seed(2)
    cfg = ShiftConfig(mode="Q", act_bits=(16, 16), rounding="floor", numerics="deepshift")
    conv = Conv2dShift(1, 2, 1, config=cfg).eval()
    x = torch.tensor([[[[40000.0, -40000.0], [32767.5, 0.3]]]])
    cm = compile(conv, x)
    assert torch.equal(cm(x), _exact(conv, x))
    lin = LinearShift(5, 3, config=ShiftConfig(mode="Q", act_bits=(3, 5), rounding="floor",
                                               numerics="deepshift")).eval()
    xl = torch.randn(2, 5) * 6
    assert torch.equal(compile(lin, xl)(xl), _exact(lin, xl))
    ps = LinearShift(5, 3, config=ShiftConfig(mode="PS", act_bits=(3, 5), numerics="deepshift")).eval()
    cps = compile(ps, xl)
    assert cps.layers["layer"].float_acts
    want = original_forward(ps, xl)
    assert (cps(xl).double() - want).abs().max() <= 1e-5 * (1 + want.abs().max())
