"""LiftShiftWeights: the kernels' weight constants become parameters of main."""
from __future__ import annotations

import numpy as np
import torch

from lowering_support import Net, lowered

from passes.kernels import PER_TERM_FAMILIES, ManualKernels
from passes.lift_weights import lift_shift_weights
from shiftcomp.config import ShiftConfig


def test_lift_weights_into_main_params() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    # the per-term kernels read the codes themselves (sum-then-shift's derived inputs: test_lower_shift.py)
    mod, report = lowered(model, torch.randn(1, 3, 6, 6), kernels=ManualKernels(PER_TERM_FAMILIES))
    lifted_mod, lifted = lift_shift_weights(mod)
    params = lifted_mod["main"].params
    assert len(params) == 3 and lifted.num_input == 1 and lifted.layers == ["conv", "fc"]
    assert int(lifted_mod["main"].attrs["num_input"]) == 1
    for arr, layer in zip(lifted.arrays, lifted.layers):
        assert np.array_equal(arr, report.layers[layer].codes)
