"""Bad flags of the training scripts: exit 2 with one ``error:`` line that names the flag, never a traceback.

Every case here is refused before any data is read or any epoch runs, so each call is quick.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from experiment_support import experiment_script

pytest.importorskip("mlxtend")


def _refused(script: str, argv: list[str], capsys: pytest.CaptureFixture, tmp_path: Path) -> str:
    """Run ``script``'s main on ``argv``; assert exit code 2 and one error line; return that line."""
    with pytest.raises(SystemExit) as info:
        experiment_script(script).main([*argv, "--out-dir", str(tmp_path), "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["-wb", "9"], "-wb/--weight-bits: ShiftConfig.weight_bits must be in 2..8, got 9"),
    (["-ab", "0", "5"], "-ab/--activation-bits: ShiftConfig.act_bits"),
    (["-ab", "3", "40"], "-ab/--activation-bits: ShiftConfig.act_bits"),
    (["--shift-range", "3", "1"], "--shift-range: ShiftConfig.shift_range"),
    (["-s", "-1"], "-s/--shift-depth:"),
    (["--layer-type", "adder", "-ab", "3", "5", "--adder-weight-bits", "2"], "--adder-weight-bits: AdderConfig"),
    (["--layer-type", "adder", "--adaptive-lr", "-1"], "--adaptive-lr: AdderConfig.adaptive_lr"),
    (["--layer-type", "shiftadd", "-ab", "40", "40"], "-ab/--activation-bits:"),
    (["--layer-type", "adder", "-st", "PS"], "-st PS applies to shift layers"),
    (["--layer-type", "adder", "--zero-free"], "--zero-free applies to shift layers"),
    (["--layer-type", "adder", "--adder-weight-bits", "8"], "--adder-weight-bits needs fixed-point activations"),
    (["--adder-weight-bits", "8", "-ab", "3", "5"], "--adder-weight-bits applies to adder layers"),
    (["--lr-schedule", "step"], "--lr-schedule step needs --lr-step-size"),
    (["-b", "0"], "argument -b/--batch-size: must be >= 1, got 0"),
    (["--train-subset", "0"], "argument --train-subset: must be >= 1"),
    (["--weights", "/no/such/weights.pth"], "--weights /no/such/weights.pth: no such file"),
    (["--resume", "/no/such/checkpoint.pth.tar"], "--resume /no/such/checkpoint.pth.tar: no such checkpoint"),
])
def test_mnist_bad_flags_exit_2_with_one_line(argv, expected, capsys, tmp_path):
    assert expected in _refused("mnist", ["--type", "conv_bn", *argv], capsys, tmp_path)


def test_unreadable_or_mismatched_weights_exit_2(capsys, tmp_path):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"not a pickle")
    line = _refused("mnist", ["--type", "conv", "--weights", str(bad)], capsys, tmp_path)
    assert "not a readable PyTorch file" in line
    from shiftcomp.models import get_model

    other = tmp_path / "linear.pth"
    torch.save(get_model("simple_linear", 10).state_dict(), other)
    for flags in (["-s", "0"], ["-st", "Q"]):
        line = _refused("mnist", ["--type", "conv", "--train-subset", "8", "--test-subset", "8", *flags,
                                  "--weights", str(other)], capsys, tmp_path)
        assert "do not fit this model" in line and "-a/--type" in line


def test_cifar10_without_data_exits_2(capsys, tmp_path):
    line = _refused("cifar10", ["-s", "0"], capsys, tmp_path)
    assert "needs --data ROOT" in line
    line = _refused("cifar10", ["-s", "0", "--data", str(tmp_path / "missing"), "--cache", "none"], capsys, tmp_path)
    assert f"--data {tmp_path / 'missing'}" in line
