"""Frontend: tracing, the Relax import of every supported op, shift composites, the quantise prologue,
and the unsupported-op error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from torch import nn
from tvm import relax

from shiftcomp.config import ShiftConfig
from shiftcomp.errors import UnsupportedOpError
from shiftcomp.frontend import (COMPOSITE_CONV2D, COMPOSITE_DENSE, composite_info, emit_quantize, import_model,
                                supported_ops, trace)
from shiftcomp.nn import Conv2dShift, LinearShift
from shiftcomp.quant import to_fixed

TARGET = tvm.target.Target({"kind": "llvm"})


def run_relax(mod: tvm.IRModule, *xs: torch.Tensor) -> np.ndarray:
    ex = tvm.compile(mod, target=TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x.numpy()) for x in xs])
    return out.numpy()


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


class Shortcut(nn.Module):
    """Option-A ResNet shortcut: slicing + F.pad on the channel dim."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2), "constant", 0)


class EveryOp(nn.Module):
    """One of each op the model zoo uses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.bn_noaffine = nn.BatchNorm2d(4, affine=False)
        self.relu, self.relu6 = nn.ReLU(), nn.ReLU6()
        self.htanh = nn.Hardtanh(-0.5, 2.0)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.avgpool = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)
        self.avgpool_inc = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop, self.drop2d = nn.Dropout(0.5), nn.Dropout2d(0.3)
        self.short = Shortcut()
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(8 + 4 * 2 * 2, 5)
        self.bn1d = nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)))
        y = self.bn_noaffine(y)
        y = self.htanh(y) + self.relu6(y) + F.hardtanh(y, 0.0, 1.5) + F.relu(y)   # residual adds
        y = self.drop2d(self.avgpool(self.maxpool(y)))                          # (N, 4, 4, 4)
        z = self.short(y)                                                        # (N, 8, 2, 2)
        a = self.gap(z).view(z.size(0), -1)                                      # (N, 8)
        b = self.flatten(self.avgpool_inc(y))                                    # (N, 4 * 2 * 2)
        h = torch.cat([a, b], dim=1)
        return self.bn1d(self.fc(self.drop(h)))


def test_every_supported_op_imports_and_matches_torch() -> None:
    torch.manual_seed(0)
    model = EveryOp().eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 8, 8)
    imported = import_model(model, x)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(run_relax(imported.mod, x), ref, rtol=1e-5, atol=1e-5)


def test_supported_ops_lists_the_zoo_ops() -> None:
    ops = set(supported_ops())
    for name in ["BatchNorm2d", "ReLU", "ReLU6", "Hardtanh", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
                 "add", "flatten", "view", "cat", "Dropout", "Linear", "Conv2d", "pad", "getitem",
                 "LinearShift", "Conv2dShift"]:
        assert name in ops, name


class Inner(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erfinv(x * 0.5)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), Inner())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + 1


def test_unsupported_function_names_op_and_location() -> None:
    with pytest.raises(UnsupportedOpError) as e:
        import_model(Outer().eval(), torch.randn(2, 3))
    msg = str(e.value)
    assert "erfinv" in msg and "block.1" in msg and "fx node" in msg, msg
    assert e.value.op == "erfinv"
    assert "test_frontend.py" in msg  # the user's source line


def test_unsupported_module_names_class_and_path() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Upsample(scale_factor=2)).eval()
    with pytest.raises(UnsupportedOpError) as e:
        import_model(model, torch.randn(1, 1, 4, 4))
    assert "Upsample" in str(e.value) and "module '1'" in str(e.value), str(e.value)


def test_unsupported_method_names_method() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.logcumsumexp(1)

    with pytest.raises(UnsupportedOpError, match="Tensor.logcumsumexp"):
        import_model(M().eval(), torch.randn(2, 3))


class ShiftNet(nn.Module):
    def __init__(self, cfg: ShiftConfig) -> None:
        super().__init__()
        self.conv = Conv2dShift(3, 4, 3, stride=2, padding=1, bias=True, config=cfg)
        self.fc = LinearShift(4 * 4 * 4, 6, bias=False, config=cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


def test_shift_layers_are_fx_leaves() -> None:
    gm = trace(ShiftNet(ShiftConfig(act_bits=(3, 5))))
    mods = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert mods == ["conv", "fc"]
    gm_bare = trace(LinearShift(4, 2))
    assert [n.target for n in gm_bare.graph.nodes if n.op == "call_module"] == ["layer"]


def test_shift_layers_import_as_composites_with_integer_weights() -> None:
    torch.manual_seed(0)
    cfg = ShiftConfig(mode="Q", weight_bits=5, act_bits=(3, 5), rounding="floor")
    model = ShiftNet(cfg).eval()
    imported = import_model(model, torch.randn(2, 3, 8, 8))
    comps = {f.attrs["layer"]: f for _, f in imported.mod.functions_items()
             if isinstance(f, relax.Function) and composite_info(f) is not None}
    assert set(comps) == {"conv", "fc"}
    conv = composite_info(comps["conv"])
    assert conv.composite == COMPOSITE_CONV2D and conv.strides == (2, 2) and conv.padding == (1, 1, 1, 1)
    assert conv.act_bits == (3, 5) and conv.rounding == "floor" and conv.weight_bits == 5 and conv.has_bias
    fc = composite_info(comps["fc"])
    assert fc.composite == COMPOSITE_DENSE and not fc.has_bias and fc.in_shape == (2, 64)
    shift, sign = model.conv.integer_weights()
    assert conv.s0 == int(shift[sign != 0].min())
    # the call's weight arguments are the exact int8 constants
    script = imported.mod.script(show_meta=False)
    assert "R.nn.conv2d" not in script.split("def main")[1]
    data = imported.layers["conv"]
    assert data.shift.dtype == np.int8 and np.array_equal(data.shift, shift.numpy())
    assert np.array_equal(data.sign, sign.numpy())


@pytest.mark.parametrize("rounding", ["nearest", "floor"])
def test_unlowered_module_is_the_float_model(rounding: str) -> None:
    """The composite fallback body = the layer's fake-quant float forward (the float baseline)."""
    torch.manual_seed(1)
    model = ShiftNet(ShiftConfig(mode="PS", weight_bits=4, act_bits=(4, 4), rounding=rounding)).eval()
    x = torch.randn(2, 3, 8, 8) * 3
    imported = import_model(model, x)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(run_relax(imported.mod, x), ref, rtol=1e-6, atol=1e-6)


def _quantize_fn(shape, int_bits, frac_bits, rounding):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(emit_quantize(bb, x, int_bits, frac_bits, rounding))
        bb.emit_func_output(y)
    return bb.get()


@pytest.mark.parametrize("fmt", [(3, 5), (1, 0), (8, 8), (16, 16), (9, 16), (2, 30)])
@pytest.mark.parametrize("rounding", ["nearest", "floor"])
def test_quantize_ties_and_clamp(fmt: tuple[int, int], rounding: str) -> None:
    """TVM's round is ties-to-even here (nearbyint), floor is floor; both clamp edges; vs quant.to_fixed."""
    i_bits, f_bits = fmt
    n = i_bits + f_bits
    qmax = 2 ** (n - 1) - 1
    ties = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5], np.float64)
    edges = np.array([qmax, qmax + 0.5, qmax + 1, -qmax - 1, -qmax - 1.5, -qmax - 2, 2.0 ** 40, -2.0 ** 40],
                     np.float64)
    vals = np.concatenate([ties, edges, [0.0, -0.0, 1e-30, -1e-30]]) * 2.0 ** -f_bits
    x = torch.tensor(vals, dtype=torch.float32)
    x = torch.cat([x, torch.tensor([3.4e38, -3.4e38]), torch.randn(64) * 2.0 ** (i_bits - 1)])
    got = run_relax(_quantize_fn(tuple(x.shape), i_bits, f_bits, rounding), x)
    ref = to_fixed(x, i_bits, f_bits, rounding).numpy()
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), ref)
    if rounding == "nearest" and n >= 4:
        assert list(got[:8]) == [0, 2, 2, 4, 0, -2, -2, -4]  # ties to even, not away from zero
