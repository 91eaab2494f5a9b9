"""The training scripts' adder flags: --layer-type adder|shiftadd, --zero-free, and the conversion dispatch."""
from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

import shiftcomp as sc
from shiftcomp.training import _convert, add_common_args, run_dir_name, shift_config_from_args


def _args(*argv):
    return add_common_args(argparse.ArgumentParser()).parse_args(list(argv))


def test_layer_type_flags_give_adder_configs():
    a = _args("--layer-type", "adder", "-ab", "3", "5", "--adder-weight-bits", "6", "--rounding", "floor")
    cfg = shift_config_from_args(a)
    assert isinstance(cfg, sc.AdderConfig)
    assert (cfg.act_bits, cfg.weight_bits, cfg.rounding, cfg.adaptive_lr) == ((3, 5), 6, "floor", 0.2)
    assert run_dir_name(a) == "adder_all_ab_3_5"
    a = _args("--layer-type", "shiftadd", "-st", "PS", "-wb", "4", "--zero-free", "--adaptive-lr", "0")
    cfg = shift_config_from_args(a)
    assert isinstance(cfg, sc.ShiftAddConfig) and cfg.shift.zero_free and cfg.shift.mode == "PS"
    assert cfg.adder.adaptive_lr is None
    assert run_dir_name(a) == "shiftadd_ps_all_wb_4_zf"
    a = _args("-st", "Q", "--zero-free")
    assert shift_config_from_args(a).zero_free and run_dir_name(a) == "shift_q_all_wb_5_zf"
    assert run_dir_name(_args("-st", "Q")) == "shift_q_all_wb_5"
    with pytest.raises(SystemExit):
        _args("--layer-type", "multiply")


def test_adder_conversion_keeps_first_and_last_layer_float():
    from shiftcomp.models import get_model

    model = _convert(get_model("simple_conv_bn"), shift_config_from_args(_args("--layer-type", "shiftadd")))
    assert type(model.conv1) is nn.Conv2d and type(model.fc2) is nn.Linear
    assert isinstance(model.conv2.adder, sc.nn.Conv2dAdder) and isinstance(model.fc1, sc.nn.LinearShift)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
