"""Accumulator width from the constant weights: int32 / int64 / refused; the bound equals the reference's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from lowering_support import lowered, set_weights

from passes.accumulator import INT32_LIMIT, acc_shift, accumulator_bound, plan_accumulator
from shiftcomp import reference
from shiftcomp.config import ShiftConfig
from shiftcomp.errors import AccumulatorOverflowError
from shiftcomp.nn import LinearShift


def _dense_with(k: int, shifts: np.ndarray, act: tuple[int, int]) -> LinearShift:
    n = shifts.shape[0]
    layer = LinearShift(k, n, bias=False, config=ShiftConfig(mode="PS", weight_bits=8, act_bits=act,
                                                              shift_range=(-60, 60)))
    set_weights(layer, shifts, np.ones_like(shifts))
    return layer.eval()


@pytest.mark.parametrize("case", ["int32_edge", "int64_edge", "int64", "overflow"])
def test_accumulator_width_from_weights(case: str) -> None:
    """bound = max_o Σ_k 2**(shift - s0) * 2**(I+F-1): < 2**31 int32, < 2**63 int64, else an error."""
    act = (4, 4)  # |x_q| <= 2**7
    k = 16
    shifts = np.zeros((3, k), np.int64)
    if case == "int32_edge":    # row 0: 15 * 2**0 + 2**19 ... pick bound = 2**31 - 2**7
        shifts[0, :] = 0
        shifts[0, 0] = 23            # Σ 2**d = 2**23 + 15;  * 2**7 = 2**30 + 1920 < 2**31
        shifts[0, 1] = 22            # + 2**22 -> (2**23 + 2**22 + 14) * 2**7 < 2**31
        want = "int32"
    elif case == "int64_edge":      # exactly 2**31: not int32
        shifts[0, 0] = 24            # 2**24 * 2**7 = 2**31 (+ 15 * 2**7)
        want = "int64"
    elif case == "int64":
        shifts[1, :] = 50
        want = "int64"
    else:
        shifts[2, :] = 56            # 16 * 2**56 * 2**7 = 2**67
        want = None
    layer = _dense_with(k, shifts, act)
    x = torch.randn(2, k)
    if want is None:
        with pytest.raises(AccumulatorOverflowError) as e:
            lowered(layer, x)
        msg = str(e.value)
        assert "'layer'" in msg and "narrower activation format" in msg and "shift range" in msg
        return
    _, report = lowered(layer, x)
    plan = report.layers["layer"].plan
    s, g = layer.integer_weights()
    assert plan.bound == reference.accumulator_bound(s, g, 2 ** 7, plan.s0)
    assert plan.dtype == want, (plan.bound, plan.bound < INT32_LIMIT)
    assert str(report.layers["layer"].spec.acc_dtype) == want


def test_plan_accumulator_matches_reference_bound() -> None:
    rng = np.random.default_rng(0)
    shift = rng.integers(-10, 0, (4, 3, 3, 3)).astype(np.int8)
    sign = rng.integers(-1, 2, (4, 3, 3, 3)).astype(np.int8)
    plan = plan_accumulator("l", shift, sign, (3, 5))
    assert plan.bound == reference.accumulator_bound(torch.from_numpy(shift), torch.from_numpy(sign), 128, plan.s0)
    assert plan.dtype == "int32" and plan.bits == plan.bound.bit_length() + 1


@pytest.mark.parametrize("seed", range(6))
def test_bound_and_s0_equal_the_reference(seed: int) -> None:
    """The pass computes its own bound (numpy, exact ints); it must equal the PyTorch reference's."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 6)), int(rng.integers(1, 40)))
    shift = rng.integers(-40, 60, shape)
    sign = rng.integers(-1, 2, shape)
    s0 = acc_shift(shift, sign)
    assert s0 == reference.acc_shift(torch.from_numpy(shift), torch.from_numpy(sign))
    for x_absmax in (0, 1, 2 ** 7, 2 ** 31):
        assert accumulator_bound(shift, sign, x_absmax, s0) == reference.accumulator_bound(
            torch.from_numpy(shift), torch.from_numpy(sign), x_absmax, s0)
