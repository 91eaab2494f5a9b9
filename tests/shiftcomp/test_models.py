"""Model zoo: output shapes, torch.fx traceability (shift layers as leaves) and the allowed op set."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from shiftcomp.models import INPUT_SHAPES, MODELS, get_model
from shiftcomp.training import shift_layer_types

from shiftcomp.nn import AdderLayer, ShiftLayer  # noqa: E402

ALLOWED_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool2d, nn.AvgPool2d,
                   nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity, AdderLayer, ShiftLayer)
ALLOWED_FUNCTIONS = {operator.add, operator.getitem, F.pad, torch.flatten, torch.cat}


class ShiftLeafTracer(torch.fx.Tracer):
    """fx tracer that keeps shiftcomp shift layers as leaves (as the compiler front end does)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        types = shift_layer_types() + (AdderLayer,)
        return bool(types and isinstance(m, types)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> torch.fx.GraphModule:
    graph = ShiftLeafTracer().trace(model)
    return torch.fx.GraphModule(model, graph)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registry_names_and_error():
    assert {"simple_linear", "simple_conv", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18",
            "mobilenetv2"} <= set(MODELS)
    with pytest.raises(KeyError, match="known"):
        get_model("resnet9000")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shape_and_fx_trace(name):
    model = get_model(name, num_classes=7).eval()
    x = torch.randn(2, *INPUT_SHAPES[name])
    with torch.no_grad():
        y = model(x)
        gm = trace(model)
        assert torch.equal(gm(x), y)
    assert y.shape == (2, 7)
    for node in gm.graph.nodes:
        if node.op == "call_module":
            assert isinstance(gm.get_submodule(node.target), ALLOWED_MODULES), node.format_node()
        elif node.op == "call_function":
            assert node.target in ALLOWED_FUNCTIONS, node.format_node()
        elif node.op == "call_method":
            assert node.target in ("view", "flatten", "reshape"), node.format_node()


@pytest.mark.parametrize("name,params", [("resnet20", 269_722), ("resnet56", 853_018), ("simple_linear", 669_706),
                                         ("simple_conv", 431_080)])
def test_parameter_counts(name, params):
    assert sum(p.numel() for p in get_model(name).parameters()) == params


def test_option_a_shortcut_pads_channels():
    from shiftcomp.models.resnet_cifar import PadShortcut

    x = torch.randn(1, 16, 8, 8)
    y = PadShortcut(8)(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any() and not y[:, 24:].any()


@pytest.mark.parametrize("name", ["simple_conv", "resnet20"])
def test_converted_model_traces_with_shift_leaves(name):
    sc = pytest.importorskip("shiftcomp")
    if not hasattr(sc, "convert") or not shift_layer_types():
        pytest.skip("shift layers / converter not available yet")
    model = get_model(name).eval()
    sc.convert(model, sc.ShiftConfig(mode="Q", weight_bits=5, act_bits=(8, 8)))
    x = torch.randn(2, *INPUT_SHAPES[name])
    gm = trace(model)
    leaves = [n for n in gm.graph.nodes if n.op == "call_module"
              and isinstance(gm.get_submodule(n.target), shift_layer_types())]
    n_layers = sum(1 for m in get_model(name).modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert len(leaves) == n_layers
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
