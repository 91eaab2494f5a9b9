"""Energy model: hand-computed values on known layers (45 nm table, Horowitz ISSCC 2014)."""
import pytest
import torch
from torch import nn

from shiftcomp import energy


def test_table_values():
    t = energy.ENERGY_45NM_PJ
    assert (t["fp32_mul"], t["fp32_add"], t["int32_add"], t["int32_shift"]) == (3.7, 0.9, 0.1, 0.13)


def test_conv_counts_and_energy_by_hand():
    # conv 16->16, 3x3, pad 1, 32x32, batch 1, bias
    lo = energy.conv_ops(1, 16, 16, (32, 32), (32, 32), (3, 3), groups=1, bias=True, shift=True)
    macs = 16 * 32 * 32 * 16 * 9
    outs = inps = 16 * 32 * 32
    assert lo.macs == macs == 2_359_296
    fl = lo.counts(shift=False)
    assert fl["fp32_mul"] == macs and fl["fp32_add"] == macs + outs
    assert energy.energy_pj(fl) == pytest.approx(macs * (3.7 + 0.9) + outs * 0.9)
    sh = lo.counts()
    assert sh["int32_shift"] == macs and sh["int32_add"] == macs
    assert sh["fp32_mul"] == outs + inps and sh["fp32_add"] == outs
    assert energy.energy_pj(sh) == pytest.approx(macs * (0.13 + 0.1) + (outs + inps) * 3.7 + outs * 0.9)
    neg = lo.counts(count_negate=True)
    assert neg["int32_add"] == 2 * macs and neg["int32_logic"] == macs


def test_depthwise_and_linear():
    dw = energy.conv_ops(2, 32, 32, (16, 16), (16, 16), (3, 3), groups=32, bias=False)
    assert dw.macs == 2 * 32 * 16 * 16 * 9
    li = energy.linear_ops(64, 512, 10, bias=True, shift=False)
    assert li.macs == 64 * 512 * 10
    assert energy.energy_pj(li.counts()) == pytest.approx(li.macs * 4.6 + 640 * 0.9)


def test_model_hooks_float_model():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    rep = energy.estimate_energy(m, (torch.randn(2, 3, 4, 4),), "tiny")
    conv_macs = 2 * 8 * 4 * 4 * 3 * 9
    lin_macs = 2 * 128 * 5
    assert rep.macs == conv_macs + lin_macs and rep.shift_macs == 0
    # no shift layers -> both sides are float and equal
    assert rep.shift_pj == pytest.approx(rep.float_pj)
    assert rep.float_pj == pytest.approx((conv_macs + lin_macs) * 4.6 + 10 * 0.9)


def test_model_hooks_shift_model():
    import shiftcomp as sc

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    sc.convert(m, sc.ShiftConfig(mode="Q", weight_bits=5, act_bits=(8, 8)))
    x = torch.randn(1, 3, 4, 4)
    rep = energy.estimate_energy(m, (x,))
    conv_macs, lin_macs = 8 * 16 * 27, 128 * 5
    assert rep.shift_macs == rep.macs == conv_macs + lin_macs
    assert rep.shift_counts["int32_shift"] == conv_macs + lin_macs
    exp_shift = (conv_macs + lin_macs) * 0.23 + (128 + 48 + 5 + 128) * 3.7 + (128 + 5) * 0.9
    assert rep.shift_pj == pytest.approx(exp_shift)
    assert rep.ratio > 1


def test_audit_mapping():
    mapped, pj = energy.audit_energy({"shl": 10, "add": 10, "xor": 4, "fmul": 2})
    assert mapped["int32_shift"] == 10 and mapped["int32_add"] == 10 and mapped["int32_logic"] == 4
    assert pj == pytest.approx(10 * 0.13 + 10 * 0.1 + 4 * 0.1 + 2 * 3.7)
    with pytest.raises(KeyError):
        energy.audit_energy({"quantum_op": 1})


def test_audit_shift_energy_mapping():
    from types import SimpleNamespace

    class C:
        def __init__(self, **kw):
            self.d = {k: 0 for k in ("mul", "add", "shift", "select", "bitwise", "cast", "minmax", "div", "cmp",
                                     "call", "fmul", "fadd")}
            self.d.update(kw)

        def as_dict(self):
            return dict(self.d)

    audit = SimpleNamespace(datapath=C(add=10, shift=5, bitwise=3, select=1, cast=7),
                            epilogue=C(mul=2, fmul=2, add=2, fadd=2), prologue=C(mul=4, fmul=4))
    counts, pj = energy.audit_shift_energy(audit)
    assert counts == {"fp32_mul": 6, "fp32_add": 2, "int32_add": 10, "int32_mul": 0, "int32_shift": 5,
                      "int32_logic": 4}
    assert pj == pytest.approx(6 * 3.7 + 2 * 0.9 + 10 * 0.1 + 5 * 0.13 + 4 * 0.1)
