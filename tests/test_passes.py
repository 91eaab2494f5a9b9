"""Passes: shift lowering (call_tir of shift kernels), accumulator widths, packing, weight lifting, audit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples
from torch import nn
from tvm import relax

from passes.accumulator import INT32_LIMIT, plan_accumulator
from passes.audit import audit_module
from passes.lift_weights import lift_shift_weights
from passes.lower_shift import LOWERINGS, LoweringReport
from passes.packing import bits_needed, pack_codes, unpack_codes
from passes.pipeline import legalize_passes, run_passes, shift_lowering_passes, shift_pipeline
from passes.quantize_kernel import quantize_primfunc
from shiftcomp.config import ShiftConfig
from shiftcomp.errors import AccumulatorOverflowError
from shiftcomp.frontend import COMPOSITES, import_model
from shiftcomp.nn import Conv2dShift, LinearShift
from shiftcomp.quant import to_fixed
from shiftcomp.reference import accumulator_bound

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


def lowered(model: nn.Module, x: torch.Tensor) -> tuple[tvm.IRModule, LoweringReport]:
    report = LoweringReport()
    mod = run_passes(import_model(model.eval(), x).mod, shift_lowering_passes(TARGET, report), TARGET)
    return mod, report


def test_lowered_ir_calls_shift_kernels() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    mod, report = lowered(model, torch.randn(2, 3, 6, 6))
    assert set(LOWERINGS) == set(COMPOSITES)
    script = mod.script(show_meta=False)
    main = script.split("def main")[1]
    assert "R.call_tir(cls.shift_conv2d_conv" in main and "R.call_tir(cls.shift_dense_fc" in main, main
    assert "R.nn.conv2d" not in main and "R.matmul" not in main
    assert "R.call_tir(cls.shiftcomp_quantize" in main  # the prologue became one kernel
    assert not any(isinstance(f, relax.Function) and f.attrs is not None and "Composite" in f.attrs
                   for _, f in mod.functions_items())  # composites removed by DCE
    assert set(report.layers) == {"conv", "fc"}
    for name, low in report.layers.items():
        prim = mod[low.kernel]
        assert str(prim.attrs["shiftcomp.role"]) == "shift" and str(prim.attrs["shiftcomp.layer"]) == name
        assert int(prim.attrs["op_pattern"]) == 8


def test_quantize_kernel_matches_to_fixed_on_ties_and_edges() -> None:
    for (i_bits, f_bits) in [(3, 5), (16, 16), (1, 0)]:
        for rounding in ("nearest", "floor"):
            q = 2.0 ** -f_bits
            qmax = 2 ** (i_bits + f_bits - 1) - 1
            x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, qmax, qmax + 1, -qmax - 1, -qmax - 2, 1e30, -1e30],
                             dtype=torch.float64) * q
            x = torch.cat([x.float(), torch.randn(20) * 4])
            prim = quantize_primfunc(tuple(x.shape), i_bits, f_bits, rounding).with_attr("global_symbol", "main")
            ex = tvm.compile(tvm.IRModule({"main": prim}), target=TARGET)
            out = tvm.runtime.tensor(np.zeros(x.shape, np.int32))
            ex["main"](tvm.runtime.tensor(x.numpy()), out)
            np.testing.assert_array_equal(out.numpy(), to_fixed(x, i_bits, f_bits, rounding).numpy())


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
    assert plan.bound == accumulator_bound(s, g, 2 ** 7, plan.s0)
    assert plan.dtype == want, (plan.bound, plan.bound < INT32_LIMIT)
    assert str(report.layers["layer"].spec.acc_dtype) == want


def test_plan_accumulator_matches_reference_bound() -> None:
    rng = np.random.default_rng(0)
    shift = rng.integers(-10, 0, (4, 3, 3, 3)).astype(np.int8)
    sign = rng.integers(-1, 2, (4, 3, 3, 3)).astype(np.int8)
    plan = plan_accumulator("l", shift, sign, (3, 5))
    assert plan.bound == accumulator_bound(torch.from_numpy(shift), torch.from_numpy(sign), 128, plan.s0)
    assert plan.dtype == "int32" and plan.bits == plan.bound.bit_length() + 1


# ------------------------------------------------------------------------------------------------ packing
@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_pack_unpack_round_trip(data: st.DataObject) -> None:
    shape = tuple(data.draw(st.lists(st.integers(0, 7), min_size=1, max_size=4)))
    vals = data.draw(st.lists(st.integers(-127, 127), min_size=1, max_size=40, unique=True))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 31)))
    codes = rng.choice(np.array(vals, np.int8), size=shape)
    packed = pack_codes(codes)
    back = unpack_codes(packed)
    assert back.dtype == np.int8 and back.shape == codes.shape and np.array_equal(back, codes)
    n = codes.size
    assert packed.bits == (bits_needed(len(np.unique(codes))) if n else 0)
    assert len(packed.data) == (n * packed.bits + 7) // 8


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_packing_bits_per_weight(bits: int) -> None:
    """Q layers use b bits (b+1 with an exact zero weight, documented); PS layers at most b bits.

    (Q at b=8 is checked with 7 of its 8 bits of range: its full default range [-127, 0] spans 128 codes,
    one more than an int8 code holds -- such a layer is refused at lowering, see test_compile.)
    """
    torch.manual_seed(bits)
    q_range = (-63, 0) if bits == 8 else None
    q = LinearShift(64, 256, config=ShiftConfig(mode="Q", weight_bits=bits, shift_range=q_range))
    with torch.no_grad():  # every magnitude in range, both signs
        lo, hi = q.shift_bounds
        e = torch.randint(lo, hi + 1, q.weight.shape).float()
        q.weight.copy_(torch.where(torch.rand(q.weight.shape) < 0.5, -1.0, 1.0) * torch.exp2(e))
    s, g = q.integer_weights()
    s0 = int(s[g != 0].min())
    codes = (g.numpy().astype(np.int64) * (s.numpy() - s0 + 1)).astype(np.int8)
    qbits = 7 if bits == 8 else bits
    assert pack_codes(codes).bits == qbits
    codes[0, 0] = 0  # one exact zero weight: 2**b + 1 symbols
    assert pack_codes(codes).bits == qbits + 1
    ps = LinearShift(64, 256, config=ShiftConfig(mode="PS", weight_bits=bits))
    s, g = ps.integer_weights()
    s0 = int(s[g != 0].min()) if bool((g != 0).any()) else 0
    codes = (g.numpy().astype(np.int64) * (s.numpy() - s0 + 1)).astype(np.int8)
    assert pack_codes(codes).bits <= bits


# ------------------------------------------------------------------------------------------------ lifting, pipeline
def test_lift_weights_into_main_params() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    mod, report = lowered(model, torch.randn(1, 3, 6, 6))
    lifted_mod, lifted = lift_shift_weights(mod)
    params = lifted_mod["main"].params
    assert len(params) == 3 and lifted.num_input == 1 and lifted.layers == ["conv", "fc"]
    assert int(lifted_mod["main"].attrs["num_input"]) == 1
    for arr, layer in zip(lifted.arrays, lifted.layers):
        assert np.array_equal(arr, report.layers[layer].codes)


def test_shift_pipeline_is_a_readable_list() -> None:
    names = [p.info.name for p in shift_pipeline(TARGET)]
    assert names[:3] == ["FoldConstant", "LowerShiftOps", "DeadCodeElimination"]
    assert "LegalizeOps" in names and "FuseOps" in names and "VMShapeLower" in names


# ------------------------------------------------------------------------------------------------ audit
def test_audit_counts_no_datapath_multiplies() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    x = torch.randn(2, 3, 6, 6)
    mod, report = lowered(model, x)
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
    from shiftcomp.energy import audit_energy

    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    x = torch.randn(2, 3, 6, 6)
    mod, _ = lowered(model, x)
    mod, _ = lift_shift_weights(mod)
    audit = audit_module(run_passes(mod, legalize_passes(TARGET), TARGET))
    counts = audit.energy_counts()
    terms = 2 * 8 * 6 * 6 * 27 + 2 * 10 * 288
    assert counts["int32_mul"] == 0 and counts["int32_shift"] >= terms and counts["int32_add"] >= terms
    assert counts["fp32_mul"] == audit.epilogue_multiplies + audit.prologue_multiplies
    mapped, pj = audit_energy(counts)
    assert pj > 0 and mapped["int32_shift"] == counts["int32_shift"]
