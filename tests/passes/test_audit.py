"""The multiplication audit of the lowered, legalised module."""
from __future__ import annotations

import torch
from lowering_support import TARGET, Net, lowered

from passes.audit import audit_module
from passes.kernels import PER_TERM_FAMILIES, ManualKernels
from passes.lift_weights import lift_shift_weights
from passes.pipeline import legalize_passes, run_passes
from shiftcomp.config import ShiftConfig
from shiftcomp.energy import audit_energy
from shiftcomp.frontend import import_model


def test_audit_counts_no_datapath_multiplies() -> None:
    # the per-term kernels: one add and one shift per term, counted exactly (sum-then-shift loops have
    # data-dependent extents; tests/passes/test_sum_then_shift_family.py audits those)
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    x = torch.randn(2, 3, 6, 6)
    mod, report = lowered(model, x, kernels=ManualKernels(PER_TERM_FAMILIES))
    mod, _ = lift_shift_weights(mod)
    audit = audit_module(run_passes(mod, legalize_passes(TARGET), TARGET))
    assert audit.datapath_multiplies == 0
    shift_kernels = {k.layer: k for k in audit.shift_kernels}
    assert set(shift_kernels) == {"conv", "fc"}
    conv_terms = 2 * 8 * 6 * 6 * 27
    assert shift_kernels["conv"].data.add >= conv_terms and shift_kernels["conv"].data.shift >= conv_terms
    # one epilogue scale per output (unless the scale is exactly 1), one prologue multiply per input element
    n_out = 2 * 8 * 6 * 6 + 2 * 10
    assert audit.epilogue_multiplies <= n_out and audit.epilogue_multiplies >= 2 * 10
    assert audit.prologue_multiplies == x.numel() + 2 * 8 * 6 * 6
    assert audit.other_multiplies == 2 * 8 * 6 * 6  # BatchNorm's scale
    text = str(audit)
    assert "data-path multiplies in shift kernels : 0" in text and "shift_conv2d_conv" in text


def test_audit_of_float_baseline_counts_multiplies_elsewhere() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4))).eval()
    x = torch.randn(2, 3, 6, 6)
    mod = import_model(model, x).mod
    audit = audit_module(run_passes(mod, legalize_passes(TARGET), TARGET))
    assert audit.datapath_multiplies == 0 and not audit.shift_kernels
    assert audit.other_multiplies >= 2 * 8 * 6 * 6 * 27 + 2 * 10 * 288  # the float conv and matmul


def test_audit_energy_counts_feed_the_energy_model() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    x = torch.randn(2, 3, 6, 6)
    mod, _ = lowered(model, x, kernels=ManualKernels(PER_TERM_FAMILIES))   # exact per-term counts
    mod, _ = lift_shift_weights(mod)
    audit = audit_module(run_passes(mod, legalize_passes(TARGET), TARGET))
    counts = audit.energy_counts()
    terms = 2 * 8 * 6 * 6 * 27 + 2 * 10 * 288
    assert counts["int32_mul"] == 0 and counts["int32_shift"] >= terms and counts["int32_add"] >= terms
    assert counts["fp32_mul"] == audit.epilogue_multiplies + audit.prologue_multiplies
    mapped, pj = audit_energy(counts)
    assert pj > 0 and mapped["int32_shift"] == counts["int32_shift"]


def test_vector_operations_count_once_per_lane() -> None:
    """Explicit vector expressions (the sum-then-shift pack writes them) weigh their lanes; a scalar operand
    broadcast to the lanes is computed once."""
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as Tb

    from passes.audit import count_primfunc

    with IRBuilder() as ib, Tb.prim_func():
        Tb.func_name("f")
        x = Tb.arg("x", Tb.Buffer((32,), "float32"))
        s = Tb.arg("s", Tb.Buffer((1,), "float32"))
        y = Tb.arg("y", Tb.Buffer((32,), "float32"))
        with Tb.serial(0, 4) as i:
            scale = tirx.Broadcast(s[0] * s[0], 8)            # one scalar multiply per iteration
            Tb.buffer_store(y, x[tirx.Ramp(i * 8, 1, 8)] * scale, [tirx.Ramp(i * 8, 1, 8)])
    counts = count_primfunc(ib.get())
    assert counts["data"].mul == counts["data"].fmul == 4 * 8 + 4
