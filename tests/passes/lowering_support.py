"""Shared fixtures of the pass tests: a small shift net and its lowered module."""
from __future__ import annotations

import numpy as np
import torch
import tvm
from torch import nn

from passes.lower_shift import LoweringReport
from passes.pipeline import run_passes, shift_lowering_passes
from shiftcomp.config import ShiftConfig
from shiftcomp.frontend import import_model
from shiftcomp.nn import Conv2dShift, LinearShift

TARGET = tvm.target.Target({"kind": "llvm"})


def set_weights(layer: nn.Module, shift: np.ndarray, sign: np.ndarray) -> None:
    """Give a PS layer exactly these integer weights."""
    with torch.no_grad():
        layer.shift.copy_(torch.from_numpy(shift.astype(np.float32)))
        layer.sign.copy_(torch.from_numpy(sign.astype(np.float32)))
    s, g = layer.integer_weights()
    assert np.array_equal(s.numpy()[g.numpy() != 0], shift[sign != 0]) and np.array_equal(g.numpy(), sign)


class Net(nn.Module):
    def __init__(self, cfg: ShiftConfig) -> None:
        super().__init__()
        self.conv = Conv2dShift(3, 8, 3, padding=1, config=cfg)
        self.bn = nn.BatchNorm2d(8)
        self.fc = LinearShift(8 * 6 * 6, 10, config=cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def lowered(model: nn.Module, x: torch.Tensor, kernels=None) -> tuple[tvm.IRModule, LoweringReport]:
    """The model's module after the shift lowering passes, and the lowering report."""
    report = LoweringReport()
    mod = run_passes(import_model(model.eval(), x).mod, shift_lowering_passes(TARGET, report, kernels=kernels),
                     TARGET)
    return mod, report
