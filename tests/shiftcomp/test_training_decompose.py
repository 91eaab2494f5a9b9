"""Training by decomposition through the experiment scripts: the architecture change, its logs, resume across it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from experiment_support import csv_rows, experiment_script

from shiftcomp import training as T

pytest.importorskip("mlxtend")
pytest.importorskip("tensorly")


ARGS = ["--type", "conv", "--threads", "1", "--train-subset", "192", "--test-subset", "64", "-b", "64",
        "--test-batch-size", "64", "--no-progress", "--seed", "3", "--epochs", "3", "--lr-step-size", "1",
        "--lr-gamma", "0.5", "--decompose", "tucker", "--decompose-epoch", "1", "--rank", "4"]


def _run(out: Path, *extra: str) -> dict:
    return experiment_script("mnist").main([*ARGS, "--out-dir", str(out), *extra])


def _interrupted(out: Path, monkeypatch, at_eval: int, *extra: str) -> None:
    calls = {"n": 0}
    real = T.evaluate

    def flaky(*a, **k):  # the process dies during this epoch's evaluation
        calls["n"] += 1
        if calls["n"] == at_eval:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(out, *extra)
    monkeypatch.setattr(T, "evaluate", real)


def test_decompose_then_recompose_logs_and_keeps_the_lr_schedule(tmp_path):
    res = _run(tmp_path, "-s", "0", "--recompose-epoch", "2")
    run = Path(res["out_dir"])
    train = csv_rows(run / "train_log.csv")
    assert [r["arch"] for r in train] == ["original", "decomposed", "recomposed"]
    assert [r["lr"] for r in train] == ["0.01", "0.005", "0.0025"]
    assert all(float(r["epoch_time_s"]) >= float(r["time_s"]) > 0 for r in train)
    assert all(float(r["cpu_time_s"]) > 0 for r in train)
    report = csv_rows(run / "decompose_report.csv")
    assert [r["layer"] for r in report] == ["conv1", "conv2", "fc1", "fc2"]
    assert report[1]["rank"] == "4x4" and "too small" in report[0]["skipped"]
    assert res["decompose_report"][1]["rank"] == "4x4"
    ckpt = torch.load(run / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["architecture"]["decomposition"] is None and ckpt["architecture"]["recomposed"]
    assert set(ckpt["state_dict"]) == set(torch.load(run / "weights.pth"))
    # the results collector reads these logs: one epoch of each architecture
    collector = experiment_script("decompose_results")
    row = collector.summarize(run)
    assert row["epochs"] == 3 and row["final"] == pytest.approx(res["final_acc1"])
    assert row["before_s"] == pytest.approx(float(train[0]["epoch_time_s"]))
    assert row["after_s"] == pytest.approx(float(train[1]["epoch_time_s"]))
    assert row["total_h"] * 3600 == pytest.approx(sum(float(r["epoch_time_s"]) for r in train))
    assert row["before_cpu_s"] == pytest.approx(float(train[0]["cpu_time_s"]))
    assert row["after_cpu_s"] == pytest.approx(float(train[1]["cpu_time_s"]))
    assert row["cpu_speedup"] == pytest.approx(float(train[0]["cpu_time_s"]) / float(train[1]["cpu_time_s"]))


@pytest.mark.parametrize("die_at", [2, 3])  # checkpoint before (epoch 1) or after (epoch 2) the decomposition
def test_resume_across_the_decomposition_is_identical(tmp_path, monkeypatch, die_at):
    full = _run(tmp_path / "a", "-s", "0")
    _interrupted(tmp_path / "b", monkeypatch, die_at, "-s", "0")
    run_b = tmp_path / "b" / "mnist" / "simple_conv" / "fp32"
    ckpt = torch.load(run_b / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["epoch"] == die_at - 1
    assert bool(ckpt["architecture"]["decomposition"]) == (die_at == 3)
    resumed = _run(tmp_path / "b", "-s", "0", "--resume")
    assert resumed["epoch"] == 3 and resumed["final_acc1"] == full["final_acc1"]
    wa = torch.load(Path(full["out_dir"]) / "weights.pth")
    wb = torch.load(run_b / "weights.pth")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_shift_run_trains_fp32_then_converts_the_factors(tmp_path, monkeypatch):
    _interrupted(tmp_path, monkeypatch, 3, "-st", "Q")
    run = tmp_path / "mnist" / "simple_conv" / "shift_q_all_wb_5"
    ckpt = torch.load(run / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["architecture"]["shift_converted"] and ckpt["shift_config"]["mode"] == "Q"
    assert [r["arch"] for r in csv_rows(run / "train_log.csv")] == ["original", "decomposed"]
    from shiftcomp.checkpoint import load_checkpoint
    from shiftcomp.nn import Conv2dShift

    loaded = load_checkpoint(run / "checkpoint.pth.tar")
    assert isinstance(loaded.model.conv2[1], Conv2dShift) and loaded.model.conv2[1].in_channels == 4
    res = _run(tmp_path, "-st", "Q", "--resume")
    assert res["epoch"] == 3 and (run / "integer_weights.pth").is_file()


def test_inconsistent_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        experiment_script("mnist").main(["--recompose-epoch", "2"])
    assert e.value.code == 2 and "--decompose" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        experiment_script("mnist").main(["--decompose", "cp", "--decompose-epoch", "5", "--epochs", "3"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        experiment_script("mnist").main(["--decompose", "cp", "--rank", "0", "--epochs", "3"])
    assert e.value.code == 2
