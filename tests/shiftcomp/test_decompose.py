"""shiftcomp.decompose: low-rank factor chains against the layers they replace."""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("tensorly")

import shiftcomp as sc  # noqa: E402
from shiftcomp.decompose import (DecomposeConfig, DecomposedConv2d, DecomposedLinear, apply_plan,  # noqa: E402
                                 decomposition_plan, evbmf_rank, recompose)


def _net(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(6, 12, 3, stride=2, padding=1, bias=bias), nn.ReLU(),
        nn.Conv2d(12, 10, (3, 5), padding=(1, 4), dilation=(1, 2)), nn.ReLU(),
        nn.Flatten(), nn.Linear(10 * 4 * 4, 24), nn.ReLU(), nn.Linear(24, 7))


X = torch.randn(3, 6, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["tucker", "svd"])
def test_full_rank_reproduces_the_layers(method):
    m = _net()
    y0 = m(X)
    report = sc.decompose(m, DecomposeConfig(method=method, rank=1.0, require_gain=False))
    assert len(report.decomposed) == 4
    assert all(r.rel_error < 1e-6 for r in report.layers)
    assert isinstance(m[0], DecomposedConv2d) and isinstance(m[5], DecomposedLinear)
    torch.testing.assert_close(m(X), y0, rtol=1e-5, atol=1e-5)


def test_cp_chain_computes_its_cp_tensor_and_error_falls_with_rank():
    errors = []
    for r in (2, 6, 24):
        m = _net()
        w = m[2].weight.detach().clone()
        report = sc.decompose(m, DecomposeConfig(method="cp", rank=r, require_gain=False,
                                                 filter_fn=lambda mod, fqn: fqn == "2"))
        chain = m[2]
        assert [type(c) for c in chain] == [nn.Conv2d] * 4
        assert chain[1].groups == chain[2].groups == r and chain[1].kernel_size == (3, 1)
        # the chain equals a plain conv holding the CP reconstruction (stride/padding/dilation split by axis)
        x = torch.randn(2, 12, 9, 11)
        ref = nn.functional.conv2d(x, chain.effective_weight(), m[2][-1].bias, padding=(1, 4), dilation=(1, 2))
        torch.testing.assert_close(chain(x), ref, rtol=1e-4, atol=1e-5)
        row = report.layers[1]
        assert row.rank == (r,)
        expect = torch.linalg.vector_norm(w - chain.effective_weight()) / torch.linalg.vector_norm(w)
        assert row.rel_error == pytest.approx(float(expect), rel=1e-4)
        errors.append(row.rel_error)
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("method,rank,expect", [
    ("tucker", 4, [(4, 4), (4, 4), (4,), (4,)]),
    ("tucker", 0.5, [(3, 6), (6, 5), (12,), (4,)]),   # (r_in, r_out) = half of (C, O)
    ("cp", 5, [(5,), (5,), (5,), (5,)]),
    ("svd", 3, [(3,), (3,), (3,), (3,)]),
])
def test_rank_is_respected(method, rank, expect):
    m = _net()
    report = sc.decompose(m, DecomposeConfig(method=method, rank=rank))
    assert [r.rank for r in report.decomposed] == expect
    chains = [c for c in m.modules() if isinstance(c, (DecomposedConv2d, DecomposedLinear))]
    assert [c.rank for c in chains] == expect
    if rank == 4 and method == "tucker":
        first, core, last = m[0]
        assert (first.out_channels, core.in_channels, core.out_channels, last.in_channels) == (4, 4, 4, 4)
        assert core.stride == (2, 2) and core.padding == (1, 1) and last.bias is not None
        assert first.bias is None and core.bias is None


def test_report_numbers():
    m = _net()
    report = sc.decompose(m, DecomposeConfig(method="tucker", rank=4))
    conv0 = report.layers[0]
    # Tucker-2 of a 6->12 3x3 stride-2 conv at (4, 4): 6*4 + 4*4*9 + 4*12 weights + 12 bias
    assert conv0.params_before == 12 * 6 * 9 + 12
    assert conv0.params_after == 6 * 4 + 4 * 4 * 9 + 4 * 12 + 12
    assert conv0.params_after == sum(p.numel() for p in m[0].parameters())
    assert conv0.macs_before == 12 * 6 * 9
    assert conv0.macs_after == 6 * 4 * 4 + 4 * 4 * 9 + 4 * 12  # the leading 1x1 sees 2x2 inputs per output
    assert conv0.param_reduction == pytest.approx(conv0.params_before / conv0.params_after)
    lin = report.layers[2]
    assert (lin.kind, lin.params_after) == ("linear", 160 * 4 + 4 * 24 + 24)
    assert report.params_after == sum(p.numel() for p in m.parameters())
    assert "decomposed" in str(report) and len(report.to_rows()) == 4


def test_grouped_and_tiny_layers_are_left_alone_and_reported():
    m = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 1, 3), nn.Conv2d(8, 8, 1))
    report = sc.decompose(m, DecomposeConfig(method="tucker", rank=1.0))
    assert [type(c) for c in m] == [nn.Conv2d] * 3
    assert not report.decomposed
    reasons = [r.reason for r in report.layers]
    assert "grouped" in reasons[0] and "too small" in reasons[1] and "no gain" in reasons[2]


def test_recompose_restores_the_original_layer_types():
    m = _net()
    ref = _net()
    sc.decompose(m, DecomposeConfig(method="cp", rank=6))
    y = m(X)
    recompose(m)
    assert [type(c) for c in m] == [type(c) for c in ref]
    for a, b in zip(m.modules(), ref.modules()):
        if isinstance(a, nn.Conv2d):
            assert (a.stride, a.padding, a.dilation, a.kernel_size) == (b.stride, b.padding, b.dilation, b.kernel_size)
    torch.testing.assert_close(m(X), y, rtol=1e-4, atol=1e-5)
    assert m.state_dict().keys() == ref.state_dict().keys()


def test_plan_rebuilds_the_module_tree_for_a_state_dict():
    m = _net()
    sc.decompose(m, DecomposeConfig(method="tucker", rank=3))
    fresh = apply_plan(_net(), decomposition_plan(m))
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh(X), m(X), rtol=0, atol=0)


def test_evbmf_finds_a_planted_rank():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(60, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 80, generator=g, dtype=torch.float64)
    noisy = low * 3 + 0.1 * torch.randn(60, 80, generator=g, dtype=torch.float64)
    assert evbmf_rank(noisy) == 4
    assert evbmf_rank(0.1 * torch.randn(60, 80, generator=g, dtype=torch.float64)) == 0


def test_bad_config_is_one_clear_error():
    with pytest.raises(ValueError, match="method"):
        DecomposeConfig(method="svd2")
    with pytest.raises(ValueError, match="fraction"):
        DecomposeConfig(rank=1.5)
    with pytest.raises(ValueError, match="vbmf"):
        DecomposeConfig(rank="auto")
    with pytest.raises(TypeError, match="wrap"):
        sc.decompose(nn.Conv2d(4, 4, 3))
    m = _net()
    sc.decompose(m, DecomposeConfig(method="svd", rank=2))
    sc.convert(m)
    with pytest.raises(TypeError, match="before shiftcomp.convert"):
        recompose(m)


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        return self.fc(torch.flatten(torch.relu(self.conv2(x)), 1))


@pytest.mark.bitexact
@pytest.mark.parametrize("method", ["tucker", "cp"])
def test_decomposed_shift_model_compiles_bit_exact(method):
    from shiftcomp.nn import Conv2dShift, LinearShift
    from shiftcomp.reference import exact

    torch.manual_seed(0)
    model = _Small().eval()
    report = sc.decompose(model, DecomposeConfig(method=method, rank=3))
    assert len(report.decomposed) == 3
    sc.convert(model, sc.ShiftConfig(mode="Q", weight_bits=5, act_bits=(4, 6)))
    shift_layers = [m for m in model.modules() if isinstance(m, (Conv2dShift, LinearShift))]
    assert len(shift_layers) == (4 + 4 + 2 if method == "cp" else 3 + 3 + 2)
    x = torch.randn(2, 3, 8, 8)
    cm = sc.compile(model, x)
    with exact(model), torch.no_grad():
        ref = model(x)
    assert torch.equal(cm(x), ref)
