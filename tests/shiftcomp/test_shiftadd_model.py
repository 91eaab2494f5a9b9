"""A ShiftAddNet ResNet compiled whole: per-op bit-exactness (sc.verify) and the model output equal to the
exact reference (hence argmax agreement), with zero data-path multiplies."""
from __future__ import annotations

import pytest
import torch

import shiftcomp as sc
from shiftcomp.models.resnet_adder import keep_stem_and_head, resnet20_shiftadd
from shiftcomp.models.resnet_cifar import CifarResNet


def _config():
    return sc.ShiftAddConfig(shift=sc.ShiftConfig(mode="PS", weight_bits=5, act_bits=(4, 4)),
                             adder=sc.AdderConfig(act_bits=(3, 5)))


def _check(model, x):
    model.eval()
    compiled = sc.compile(model, x)
    assert compiled.audit.datapath_multiplies == 0
    roles = {k.role for k in compiled.audit.kernels}
    assert {"shift", "adder"} <= roles
    report = sc.verify(compiled, model, x, probes=False)
    assert report.ops and all(op.bit_exact for op in report.ops)
    assert report.argmax_agreement == 1.0 and report.max_ulp == 0
    return report


@pytest.mark.bitexact
def test_shiftadd_resnet8_compiled_whole():
    torch.manual_seed(0)
    model = sc.convert(CifarResNet(1), _config(), filter_fn=keep_stem_and_head)
    report = _check(model, torch.randn(2, 3, 32, 32))
    assert len(report.ops) == 12                      # 6 block convs -> 6 shift + 6 adder layers


@pytest.mark.slow
@pytest.mark.bitexact
def test_shiftadd_resnet20_compiled_whole():
    torch.manual_seed(0)
    report = _check(resnet20_shiftadd(10, _config()), torch.randn(4, 3, 32, 32))
    assert len(report.ops) == 36
