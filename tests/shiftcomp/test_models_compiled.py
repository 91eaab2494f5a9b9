"""Whole zoo models, compiled vs PyTorch through the exact reference (random weights, random BN stats).

For each model: every compiled shift op is bit-exact on the activations captured from the PyTorch model;
the report shows, per shift op, how far its in-model input/output drifted from PyTorch (float glue such as
BatchNorm is computed by different code in TVM and PyTorch; the drift enters there and propagates
through the fixed-point rounding); the model outputs must be close and every argmax identical; and the
multiplication audit finds no multiply in any shift kernel's data path.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from shiftcomp.compiler import compile
from shiftcomp.config import ShiftConfig
from shiftcomp.convert import convert
from shiftcomp.models import INPUT_SHAPES, get_model
from shiftcomp.verification import verify


def make(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = get_model(name)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial eval statistics
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    convert(model, ShiftConfig(mode="Q", weight_bits=5, act_bits=(4, 8)))
    return model.eval()


def check(name: str, batch: int = 8) -> None:
    model = make(name)
    x = torch.randn((batch,) + INPUT_SHAPES[name], generator=torch.Generator().manual_seed(1))
    cm = compile(model, x)
    report = verify(cm, model, x, probes=True)
    print(f"\n{name}\n{report}\n{cm.audit}")
    assert report.ops_bit_exact, [o.layer for o in report.ops if not o.bit_exact]
    assert len(report.ops) == len(cm.layers) > 0
    assert report.argmax_identical, report.argmax_agreement
    with torch.no_grad():
        scale = float(cm(x).abs().max())
    assert report.max_abs <= 0.05 * scale, (report.max_abs, scale)
    assert cm.audit.datapath_multiplies == 0
    assert {k.layer for k in cm.audit.shift_kernels} == set(cm.layers)


def test_simple_conv_mnist() -> None:
    check("simple_conv")


def test_resnet20() -> None:
    check("resnet20")


@pytest.mark.slow
def test_mobilenetv2() -> None:
    check("mobilenetv2", batch=4)
