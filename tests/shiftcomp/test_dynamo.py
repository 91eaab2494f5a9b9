"""``torch.compile(model, backend="shiftcomp")`` (shiftcomp/dynamo.py) against ``shiftcomp.compile`` and eager."""
from __future__ import annotations

import importlib.metadata
import tomllib
import warnings
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch import nn

import shiftcomp as sc
from shiftcomp.dynamo import dynamo_report, shiftcomp_backend
from shiftcomp.errors import BackendOptionError
from shiftcomp.models import get_model

CFG = sc.ShiftConfig(mode="Q", weight_bits=5, act_bits=(3, 5))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Make ``backend="shiftcomp"`` resolvable and start every test with dynamo's caches empty.

    An installed copy of shiftcomp that predates its entry point does not list the backend; it is then
    registered here under the same name (``test_entry_point_*`` check the entry point itself).
    """
    if "shiftcomp" not in torch._dynamo.list_backends():
        torch._dynamo.register_backend(shiftcomp_backend, name="shiftcomp")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _bn_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial eval statistics, so that BatchNorm is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model


class TwoConv(nn.Module):
    """Two convs with BatchNorm, a residual add and a linear head: the parts of a ResNet block, small."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)) + h)
        return self.fc(h.mean((2, 3)))


def _assert_equals_sc_compile(model: nn.Module, x: torch.Tensor, layer_names: list[str]) -> None:
    """``torch.compile(backend="shiftcomp")`` output ``torch.equal`` to ``sc.compile``'s, every layer compiled."""
    expected = sc.compile(model, x)(x)
    compiled = torch.compile(model, backend="shiftcomp")
    with torch.no_grad():
        got = compiled(x)
    assert torch.equal(got, expected)
    report = dynamo_report(compiled)
    assert report.compiled_layers == layer_names, str(report)
    assert report.graph_breaks == [] and report.eager_layers == {}
    assert [g.status for g in report.graphs] == ["compiled"], str(report)
    # the same input again runs the cached build; no second graph
    with torch.no_grad():
        assert torch.equal(compiled(x), expected)
    assert len(dynamo_report(compiled).graphs) == 1


def test_shift_model_equals_sc_compile() -> None:
    torch.manual_seed(0)
    model = sc.convert(_bn_stats(TwoConv()), CFG).eval()
    _assert_equals_sc_compile(model, torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)),
                              ["conv1", "conv2", "fc"])


@pytest.mark.parametrize("config, layer_names", [
    (sc.AdderConfig(act_bits=(3, 5)), ["conv1", "conv2", "fc"]),
    (sc.ShiftAddConfig(shift=CFG, adder=sc.AdderConfig(act_bits=(3, 5))),
     ["conv1.shift", "conv1.adder", "conv2.shift", "conv2.adder", "fc"]),
], ids=["addernet", "shiftaddnet"])
def test_adder_model_equals_sc_compile(config: object, layer_names: list[str]) -> None:
    torch.manual_seed(0)
    model = sc.convert(_bn_stats(TwoConv()), config).eval()
    _assert_equals_sc_compile(model, torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)),
                              layer_names)


@pytest.mark.slow
def test_resnet20_equals_sc_compile() -> None:
    torch.manual_seed(0)
    model = sc.convert(_bn_stats(get_model("resnet20")), CFG).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = sc.compile(model, x)(x)
    compiled = torch.compile(model, backend="shiftcomp")
    with torch.no_grad():
        got = compiled(x)
    assert torch.equal(got, expected)
    report = dynamo_report(compiled)
    names = [name for name, _ in sc.nn.named_shift_layers(model)]
    assert report.compiled_layers == names and len(names) == 20, str(report)
    assert report.graph_breaks == [] and report.eager_layers == {}
    # the same input again runs the cached build; no second graph
    with torch.no_grad():
        assert torch.equal(compiled(x), expected)
    assert len(dynamo_report(compiled).graphs) == 1


class Branchy(nn.Module):
    """Two shift layers with a Python branch on a tensor value between them (a graph break)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean((2, 3))
        if h.sum() > 1.0:  # data-dependent: dynamo breaks the graph here
            h = h * 0.5
        else:
            h = h + 1.0
        return self.fc(h)


def test_graph_break_runs_and_is_reported() -> None:
    torch.manual_seed(0)
    model = sc.convert(Branchy(), CFG).eval()
    compiled = torch.compile(model, backend="shiftcomp")
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(1, 3, 8, 8, generator=g) * 4 + 2, torch.randn(1, 3, 8, 8, generator=g) * 0.01]
    taken = set()
    for x in xs:
        with torch.no_grad():
            taken.add(bool(torch.relu(model.conv(x)).mean((2, 3)).sum() > 1.0))
            # the compiled parts follow the exact integer arithmetic; eager's float glue may round differently
            with sc.reference.exact(model):
                expected = model(x)
            got = compiled(x)
        assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    assert taken == {True, False}
    report = dynamo_report(compiled)
    assert len(report.graph_breaks) == 1, str(report)
    assert "test_dynamo.py" in report.graph_breaks[0] and "if h.sum() > 1.0" in report.graph_breaks[0]
    assert "Python branch on a tensor value" in report.graph_breaks[0]
    assert report.compiled_layers == ["conv", "fc"], str(report)
    assert "graph break" in str(report)


class UsesHypot(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.hypot(self.fc(x), x)


def test_unsupported_op_falls_back_to_eager() -> None:
    from shiftcomp.frontend import supported_ops

    assert "hypot" not in supported_ops()
    torch.manual_seed(0)
    model = sc.convert(UsesHypot(), CFG).eval()
    x = torch.randn(3, 6)
    compiled = torch.compile(model, backend="shiftcomp")
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))
    report = dynamo_report(compiled)
    assert report.eager_layers.keys() == {"fc"}
    assert "unsupported op 'hypot'" in report.eager_layers["fc"], str(report)
    assert "test_dynamo.py" in report.eager_layers["fc"]              # the user's source line


def test_training_mode_returns_graph_and_warns_once() -> None:
    import shiftcomp.dynamo as scd

    scd._WARNED.discard("training")
    torch.manual_seed(0)
    model = sc.convert(Branchy(), CFG).train()
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, backend="shiftcomp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = compiled(x)
        compiled(x)
    assert sum("inference only" in str(w.message) for w in caught) == 1
    assert torch.allclose(y, model(x), atol=1e-6)
    y.sum().backward()                               # still differentiable: PyTorch ran it
    assert model.conv.weight.grad is not None
    report = dynamo_report(compiled)
    assert report.compiled_layers == [] and "training mode" in report.eager_layers["conv"]


def test_graph_without_shift_layers_is_left_to_pytorch() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    compiled = torch.compile(model, backend="shiftcomp")
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))
    report = dynamo_report(compiled)
    assert [g.status for g in report.graphs] == ["pytorch"] and report.layers == []


@pytest.mark.parametrize("options, match", [
    ({"targett": "llvm"}, "unknown option"),
    ({"target": "no-such-target"}, "not a valid target"),
    ({"tuned": "/no/such/database"}, "no such folder"),
    ({"debug": "yes"}, "debug"),
])
def test_bad_options_raise_backend_option_error(options: dict, match: str) -> None:
    model = sc.convert(nn.Sequential(nn.Linear(4, 4)), CFG).eval()
    compiled = torch.compile(model, backend="shiftcomp", options=options)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as info:
        compiled(torch.randn(2, 4))
    assert isinstance(info.value.inner_exception, BackendOptionError)
    assert match in str(info.value.inner_exception)


def test_debug_env_prints_at_compile_time(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SHIFTCOMP_DYNAMO_DEBUG", "1")
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    torch.compile(model, backend="shiftcomp")(torch.randn(2, 4))
    assert "[shiftcomp.dynamo] graph" in capsys.readouterr().err


def test_entry_point_declared_and_loads() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    value = meta["project"]["entry-points"]["torch_dynamo_backends"]["shiftcomp"]
    ep = importlib.metadata.EntryPoint(name="shiftcomp", value=value, group="torch_dynamo_backends")
    assert ep.load() is shiftcomp_backend


def test_entry_point_installed_resolves() -> None:
    eps = importlib.metadata.entry_points(group="torch_dynamo_backends")
    if "shiftcomp" not in eps.names:
        pytest.skip("the installed shiftcomp predates the entry point (pip install -e . again)")
    assert eps["shiftcomp"].load() is shiftcomp_backend
    from torch._dynamo.backends.registry import lookup_backend

    assert lookup_backend("shiftcomp") is shiftcomp_backend


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).view(x.size(0), -1))


def test_new_shapes_recompile_and_are_cached() -> None:
    torch.manual_seed(0)
    model = sc.convert(Flat(), CFG).eval()
    compiled = torch.compile(model, backend="shiftcomp")
    for batch in (2, 3, 4, 3):                        # from the second shape on, dynamo hands over a dynamic graph
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            assert torch.equal(compiled(x), sc.compile(model, x)(x))
    report = dynamo_report(compiled)
    shapes = [s[0][0] for g in report.graphs for s in g.shapes]
    assert sorted(shapes) == [2, 3, 4], str(report)  # batch 3 the second time ran the cached build
    assert report.compiled_layers == ["conv", "fc"]
