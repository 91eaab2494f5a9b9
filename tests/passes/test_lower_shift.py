"""LowerShiftOps: shift composites -> call_tir of kernels from a kernel provider."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from lowering_support import TARGET, Net, lowered
from tvm import relax

from passes.adder_contract import ADDER_COMPOSITES
from passes.lower_shift import LOWERINGS
from shiftcomp.config import ShiftConfig
from shiftcomp.frontend import COMPOSITES


def test_lowered_ir_calls_shift_kernels() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    mod, report = lowered(model, torch.randn(2, 3, 6, 6))
    assert set(LOWERINGS) == set(COMPOSITES) | set(ADDER_COMPOSITES)
    script = mod.script(show_meta=False)
    main = script.split("def main")[1]
    assert "R.call_tir(cls.shift_conv2d_conv" in main and "R.call_tir(cls.shift_dense_fc" in main, main
    assert "R.nn.conv2d" not in main and "R.matmul" not in main
    # the frontend's quantise chain became one kernel: the sum-then-shift family's pack, quantising as it packs
    assert "R.call_tir(cls.shiftcomp_quantize" not in main
    assert "R.call_tir(cls.shift_prologue_conv, (inp_0,)" in main, main
    assert not any(isinstance(f, relax.Function) and f.attrs is not None and "Composite" in f.attrs
                   for _, f in mod.functions_items())  # composites removed by DCE
    assert set(report.layers) == {"conv", "fc"}
    for name, low in report.layers.items():
        prim = mod[low.kernel]
        assert str(prim.attrs["shiftcomp.role"]) == "shift" and str(prim.attrs["shiftcomp.layer"]) == name
        assert int(prim.attrs["op_pattern"]) == 8
        pro = mod[low.prologue]
        assert low.prologue_quantizes and str(pro.attrs["shiftcomp.role"]) == "prologue"
        assert str(pro.params[0].ty.dtype) == "float32"


def test_per_term_kernels_keep_the_quantise_kernel() -> None:
    from passes.kernels import PER_TERM_FAMILIES, ManualKernels

    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    mod, report = lowered(model, torch.randn(2, 3, 6, 6), kernels=ManualKernels(PER_TERM_FAMILIES))
    main = mod.script(show_meta=False).split("def main")[1]
    assert "R.call_tir(cls.shiftcomp_quantize" in main
    assert all(low.prologue is None and not low.prologue_quantizes for low in report.layers.values())


# ------------------------------------------------------------------------------------------------ providers
def test_kernel_provider_is_passed_in_and_can_add_derived_inputs() -> None:
    """A provider returning its own family: the kernel reads a derived input (here: the codes rebuilt by a
    registered derivation); the lowering passes it as a constant and records it for the artifact."""
    from kernel_families import CODES_FROM_LOGICAL, derived_codes_family

    from passes.kernels import ManualKernels

    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    provider = ManualKernels(families={"dense": derived_codes_family, "conv2d": derived_codes_family})
    mod, report = lowered(model, torch.randn(1, 3, 6, 6), kernels=provider)
    for low in report.layers.values():
        (w,) = low.weights
        assert w.name == "derived_codes" and w.derive.fn == CODES_FROM_LOGICAL
        assert np.array_equal(w.array, low.codes)
        assert [str(n) for n in mod[low.kernel].attrs["shiftcomp.weight_inputs"]] == ["derived_codes"]


def test_unknown_kernel_kind_names_the_family_table() -> None:
    from passes.kernels import ManualKernels

    model = Net(ShiftConfig(act_bits=(4, 4)))
    with pytest.raises(ValueError, match="no kernel family for kind 'conv2d'"):
        lowered(model, torch.randn(1, 3, 6, 6), kernels=ManualKernels(families={}))
