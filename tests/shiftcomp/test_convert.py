"""convert(): in-place swapping, depth counted from the start, filter_fn, weights carried, errors."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import shiftcomp as sc
from shiftcomp import ShiftConfig, convert
from shiftcomp.convert import convertible_layers
from shiftcomp.nn import Conv2dShift, LinearShift, ShiftLayer, named_shift_layers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.ReLU(),   # depthwise
            nn.Conv2d(8, 16, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.ModuleList([nn.Linear(16, 12), nn.Linear(12, 10)])

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.head[1](torch.relu(self.head[0](x)))


ORDER = ["features.0", "features.3", "features.5", "head.0", "head.1"]


def rounded_copy(model: nn.Module, cfg: ShiftConfig, names) -> nn.Module:
    """The float model with the chosen layers' weights replaced by sign * 2**shift (docs/numerics.md, Weights rounding)."""
    ref = copy.deepcopy(model)
    lo, hi = cfg.shift_bounds
    for name in names:
        m = ref.get_submodule(name)
        shift, sign = sc.quant.q_round(m.weight, lo, hi)
        with torch.no_grad():
            m.weight.copy_(sign.float() * torch.exp2(shift.float()))
    return ref


def test_public_api():
    assert sc.ShiftConfig is ShiftConfig and sc.convert is convert
    assert sc.nn.LinearShift is LinearShift and hasattr(sc.reference, "shift_conv2d")
    assert hasattr(sc.quant, "to_fixed")


@pytest.mark.parametrize("mode", ["Q", "PS"])
def test_convert_all_preserves_outputs_up_to_rounding(mode):
    torch.manual_seed(0)
    model = Net().eval()
    cfg = ShiftConfig(mode=mode)
    ref = rounded_copy(model, cfg, ORDER)
    out = convert(model, cfg)
    assert out is model
    assert [n for n, _ in named_shift_layers(model)] == ORDER
    assert isinstance(model.features[1], nn.BatchNorm2d)          # BN stays float
    x = torch.randn(4, 3, 8, 8)
    # same float32 ops on the same (rounded) weights: equal up to float32 summation-order noise
    assert torch.allclose(model(x), ref(x), rtol=1e-6, atol=1e-6)
    assert not model.features[0].training                         # training mode carried


def test_convert_with_fixed_point_activations_matches_fake_quant():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    cfg = ShiftConfig(act_bits=(4, 8))
    ref = rounded_copy(model, cfg, ["0", "2"])
    convert(model, cfg)
    x = torch.randn(7, 6)
    q = lambda t: sc.quant.to_fixed(t, 4, 8).float() * 2.0 ** -8  # noqa: E731
    want = ref[2](q(ref[1](ref[0](q(x)))))
    assert torch.equal(model(x), want)


@pytest.mark.parametrize("depth", [0, 1, 2, 4, 5, 100])
def test_depth_counts_from_the_start(depth):
    model = Net()
    convert(model, ShiftConfig(depth=depth))
    converted = [n for n, _ in named_shift_layers(model)]
    assert converted == ORDER[:depth]
    assert [n for n, _ in convertible_layers(model)] == ORDER[depth:]   # the rest stays float


def test_filter_fn_skips_but_keeps_numbering():
    model = Net()
    seen = []

    def keep(m, fqn):
        seen.append(fqn)
        return fqn != "features.3"

    convert(model, ShiftConfig(depth=3), filter_fn=keep)
    assert seen == ORDER[:3]
    assert [n for n, _ in named_shift_layers(model)] == ["features.0", "features.5"]
    assert type(model.features[3]) is nn.Conv2d


def test_only_exact_types_and_idempotent():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(4, 4), MyLinear(4, 4), nn.MultiheadAttention(4, 2))
    convert(model, ShiftConfig())
    assert isinstance(model[0], LinearShift)
    assert type(model[1]) is MyLinear                                   # subclasses untouched
    assert type(model[2].out_proj) is not LinearShift                   # MHA reads out_proj.weight directly
    before = model[0]
    convert(model, ShiftConfig(mode="PS"))                              # shift layers are not reconverted
    assert model[0] is before


def test_unsupported_padding_mode_names_the_layer_and_changes_nothing():
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")))
    with pytest.raises(ValueError, match="'1.0'.*padding_mode='reflect'"):
        convert(model, ShiftConfig())
    assert type(model[0]) is nn.Conv2d                                  # nothing swapped
    convert(model, ShiftConfig(), filter_fn=lambda m, fqn: fqn != "1.0")
    assert isinstance(model[0], Conv2dShift) and type(model[1][0]) is nn.Conv2d
    fresh = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    convert(fresh, ShiftConfig(depth=1))                                # out of depth: not an error
    assert isinstance(fresh[0], Conv2dShift) and type(fresh[1]) is nn.Conv2d


def test_dtype_device_and_bare_layer():
    model = nn.Sequential(nn.Linear(3, 2)).double()
    convert(model, ShiftConfig(mode="PS"))
    p = next(model[0].parameters())
    assert p.dtype == torch.float64 and p.device.type == "cpu"
    assert model(torch.randn(1, 3, dtype=torch.float64)).dtype == torch.float64
    bare = nn.Conv2d(2, 3, 3)
    new = convert(bare, ShiftConfig())
    assert isinstance(new, Conv2dShift) and new is not bare
    assert convert(nn.Conv2d(2, 3, 3), ShiftConfig(depth=0)).__class__ is nn.Conv2d


def test_shared_module_stays_shared():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    convert(model, ShiftConfig())
    assert isinstance(model[0], LinearShift) and model[0] is model[2]
    assert sum(isinstance(m, ShiftLayer) for m in model.modules()) == 1


def test_converted_model_trains_and_runs_exact():
    torch.manual_seed(2)
    model = convert(Net(), ShiftConfig(mode="PS", act_bits=(4, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(2, 3, 8, 8)
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    model.eval()
    y = model(x)
    with sc.reference.exact(model):
        ye = model(x)
    assert torch.allclose(y, ye, rtol=1e-4, atol=1e-5)
