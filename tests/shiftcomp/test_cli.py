"""The ``shiftcomp`` command line: convert -> compile -> verify on a real (small) checkpoint, and bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import shiftcomp as sc
from shiftcomp.checkpoint import load_checkpoint
from shiftcomp.cli import main
from shiftcomp.models import get_model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """simple_linear with FP32 weights saved, then converted by the CLI to a Q, 5-bit, Q(8,8) checkpoint."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    fp32 = get_model("simple_linear")
    torch.save(fp32.state_dict(), d / "fp32.pth")
    ckpt = d / "q.pth.tar"
    assert main(["convert", "simple_linear", "--weights", str(d / "fp32.pth"), "--mode", "Q", "-wb", "5",
                 "-ab", "8", "8", "-o", str(ckpt)]) == 0
    return d, ckpt, fp32


def test_convert_checkpoint_rebuilds_the_same_model(converted):
    _, ckpt, fp32 = converted
    ck = load_checkpoint(ckpt)
    assert ck.arch == "simple_linear" and ck.config.act_bits == (8, 8) and ck.config.weight_bits == 5
    expected = sc.convert(fp32, sc.ShiftConfig(mode="Q", weight_bits=5, act_bits=(8, 8))).eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(ck.model(x), expected(x))


def test_compile_then_verify_artifact(converted, capsys):
    d, ckpt, _ = converted
    so = d / "model.so"
    assert main(["compile", str(ckpt), "--batch", "4", "-o", str(so), "--audit"]) == 0
    assert so.is_file() and so.stat().st_size > 0
    out = capsys.readouterr().out
    assert "data" in out.lower()  # the audit table was printed
    assert main(["verify", str(ckpt), "--batch", "4", "--artifact", str(so)]) == 0


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "nope.pth.tar"), "-o", str(tmp_path / "m.so")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_foreign_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"this is not a checkpoint")
    assert main(["compile", str(bad), "-o", str(tmp_path / "m.so")]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err


def test_console_script_help_runs():
    r = subprocess.run([sys.executable, "-m", "shiftcomp.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("train", "convert", "compile", "tune", "bench", "verify", "demo"):
        assert cmd in r.stdout


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    from shiftcomp.demo import run_demo

    result = run_demo(epochs=1, out_dir=tmp_path, progress=False)
    assert result.ok and result.bit_exact_outputs
    assert result.acc_compiled > 80.0


def test_tune_accepts_a_checkpoint(converted, monkeypatch, capsys):
    """`shiftcomp tune CKPT` loads the checkpoint and hands its model to shiftcomp.tune.tune with the total
    trial budget (it used to crash with AttributeError: args.checkpoint)."""
    import shiftcomp.tune as T

    d, ckpt, _ = converted
    calls = {}

    def fake_tune(model, inputs, target="llvm", trials=64, work_dir=None, **kw):
        calls.update(model=model, shape=tuple(inputs[0].shape), target=target, trials=trials, work_dir=work_dir)
        return T.TuneSummary(str(work_dir), "llvm-x", ["t"], trials, 3, 1.0, "local", {})

    monkeypatch.setattr(T, "tune", fake_tune)
    assert main(["tune", str(ckpt), "--trials", "5", "--batch", "2", "--work-dir", str(d / "db")]) == 0
    assert calls["trials"] == 5 and calls["shape"] == (2, 1, 28, 28) and calls["work_dir"] == str(d / "db")
    assert isinstance(calls["model"], torch.nn.Module)
    assert "--tuned " + str(d / "db") in capsys.readouterr().out


def test_tune_reports_the_shapes_it_changed_and_can_skip_them(converted, monkeypatch, capsys):
    import shiftcomp.tune as T

    d, ckpt, _ = converted
    seen = []
    changed = {"key": "conv2d n1 c64", "default": {"lanes": 32, "block_vectors": 4, "k_tiles": 1},
               "chosen": {"lanes": 16, "block_vectors": 4, "k_tiles": 2}, "default_ms": 0.5, "chosen_ms": 0.4}
    same = {**changed, "key": "conv2d n1 c16", "chosen": changed["default"], "chosen_ms": 0.5}

    def fake_tune(model, inputs, target="llvm", trials=64, work_dir=None, shapes=True, **kw):
        seen.append(shapes)
        return T.TuneSummary(str(work_dir), "llvm-x", [], trials, 0, 1.0, "local", {},
                             shapes=[changed, same] if shapes else [])

    monkeypatch.setattr(T, "tune", fake_tune)
    assert main(["tune", str(ckpt), "--work-dir", str(d / "db")]) == 0
    out = capsys.readouterr().out
    assert "2 layer shape(s) measured, 1 faster than the default" in out and "conv2d n1 c64: 0.5000 -> 0.4000" in out
    assert main(["tune", str(ckpt), "--work-dir", str(d / "db"), "--no-shapes"]) == 0
    assert seen == [True, False] and "layer shape" not in capsys.readouterr().out


def test_tune_unknown_model_is_exit_2(capsys):
    assert main(["tune", "no_such_model_or_file"]) == 2
    assert "neither a checkpoint nor a zoo model" in capsys.readouterr().err


def test_verify_compiles_with_the_same_tuned_setting_as_compile(converted, monkeypatch):
    """compile and verify default to the same --tuned (auto), so verify --artifact checks the same build."""
    import shiftcomp.compiler as C

    d, ckpt, _ = converted
    seen = []
    real = C.compile

    def spy(*args, **kwargs):
        seen.append(kwargs.get("tuned", "<default>"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sc, "compile", spy)
    so = d / "same.so"
    assert main(["compile", str(ckpt), "-o", str(so)]) == 0
    assert main(["verify", str(ckpt), "--artifact", str(so), "--data", "random"]) == 0
    assert main(["verify", str(ckpt), "--artifact", str(so), "--data", "random", "--tuned", "none"]) in (0, 1)
    assert seen == ["auto", "auto", None]


@pytest.mark.parametrize("command", ["train", "bench", "convert", "compile", "verify", "tune", "demo"])
def test_every_subcommand_help_exits_0(command, capsys):
    """``shiftcomp <command> --help`` prints usage; train/bench need it although they pass flags through."""
    try:
        code = main([command, "--help"])
    except SystemExit as e:                  # argparse's own -h exits 0
        code = e.code
    assert code == 0
    assert f"usage: shiftcomp {command}" in capsys.readouterr().out


def test_missing_optional_module_is_one_line(monkeypatch, capsys):
    import shiftcomp.cli as cli

    def missing(_args):
        raise ModuleNotFoundError("No module named 'xgboost'")

    monkeypatch.setattr(cli, "cmd_tune", missing)
    assert main(["tune", "simple_linear"]) == 2
    assert "pip install 'shiftcomp[tune]'" in capsys.readouterr().err
