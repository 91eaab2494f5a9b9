"""shiftcomp.checkpoint on files written by the original DeepShift code (tests/fixtures/deepshift/): every run
kind imports with no options and reproduces the original forward; each missing piece of information is either
read from elsewhere or refused with the flag that supplies it."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from deepshift_fixtures import CIFAR_RUNS, MNIST_RUNS, comparable, images, original, run_folder
from shiftcomp.checkpoint import load_checkpoint
from shiftcomp.checkpoint_deepshift import ImportOptions, deepshift_order, deepshift_selection
from shiftcomp.checkpoint_pickle import PickledObject, class_path, load_pickled, object_state
from shiftcomp.models import get_model
from shiftcomp.nn import Conv2dShift, LinearShift, named_shift_layers

TOL = 1e-4  # float32 summation order: the original sums in float32 in its own order


def agree(name: str, model: nn.Module, rounded: bool = True) -> tuple[float, float]:
    x = images(name)
    with torch.no_grad():
        y = comparable(name, model(x))
    want = original(name, rounded)
    return float((y - want).abs().max()), float((y.argmax(1) == want.argmax(1)).float().mean())


def test_fixtures_present() -> None:
    assert len(MNIST_RUNS) >= 12 and len(CIFAR_RUNS) == 2


@pytest.mark.parametrize("name", MNIST_RUNS + CIFAR_RUNS)
def test_run_folder_imports_and_matches_original(name, tmp_path) -> None:
    ck = load_checkpoint(run_folder(name, tmp_path))
    assert ck.origin == "deepshift" and ck.config is not None and ck.config.numerics == "deepshift"
    diff, argmax = agree(name, ck.model)
    assert diff <= TOL and argmax == 1.0, (name, ck.summary, diff, argmax)


@pytest.mark.parametrize("name", CIFAR_RUNS)
def test_cifar_checkpoint_tar_as_written(name, tmp_path) -> None:
    """module. prefix, 'linear' classifier, unrounded weights, pickled RAdam/MultiStepLR objects."""
    run = run_folder(name, tmp_path)
    ck = load_checkpoint(run / "checkpoint.pth.tar")
    assert ck.arch == "resnet20" and len(ck.layers if hasattr(ck, "layers") else list(named_shift_layers(ck.model))) == 20
    assert ck.epoch == 1
    diff, argmax = agree(name, ck.model, rounded=False)
    assert diff <= TOL and argmax == 1.0


def test_pickled_objects_are_read_without_their_code(tmp_path) -> None:
    run = run_folder("cifar10_resnet20_ps_16_16", tmp_path)
    obj = load_pickled(run / "checkpoint.pth.tar")
    sched = obj["lr_scheduler"]
    assert isinstance(sched, PickledObject) and class_path(sched) == "torch.optim.lr_scheduler.MultiStepLR"
    assert class_path(object_state(sched)["optimizer"]) == "optim.radam.RAdam"
    assert "optim.radam" not in sys.modules and "deepshift.modules" not in sys.modules   # nothing of it imported


def test_model_pth_alone_gives_its_config(tmp_path) -> None:
    """No command_args.txt: mode, weight bits and activation format come from the pickled layer objects."""
    run = run_folder("mnist_linear_q_3_5", tmp_path, files=("model.pth",), command_args=False)
    ck = load_checkpoint(run / "model.pth")
    assert ck.arch == "simple_linear" and ck.config.mode == "Q" and ck.config.act_bits == (3, 5)
    diff, argmax = agree("mnist_linear_q_3_5", ck.model)
    assert diff <= TOL and argmax == 1.0


def test_ps_weights_alone_from_keys(tmp_path) -> None:
    run = run_folder("mnist_conv_ps_16_16", tmp_path, files=("weights.pth",), command_args=False)
    ck = load_checkpoint(run / "weights.pth")
    assert ck.arch == "simple_conv" and ck.config.mode == "PS" and ck.config.act_bits == (16, 16)
    diff, argmax = agree("mnist_conv_ps_16_16", ck.model)
    assert diff <= TOL and argmax == 1.0


def test_q_weights_alone_detected_by_powers_of_two(tmp_path) -> None:
    run = run_folder("mnist_conv_q_3_5", tmp_path, files=("weights.pth",), command_args=False)
    ck = load_checkpoint(run / "weights.pth", options=ImportOptions(act_bits=(3, 5)))
    assert ck.config.mode == "Q" and len(list(named_shift_layers(ck.model))) == 4
    diff, argmax = agree("mnist_conv_q_3_5", ck.model)
    assert diff <= TOL and argmax == 1.0


def test_unrounded_q_checkpoint_without_command_args_is_refused(tmp_path) -> None:
    run = run_folder("cifar10_resnet20_q_3_5", tmp_path, files=("checkpoint.pth.tar",), command_args=False)
    with pytest.raises(ValueError, match="saved unrounded.*--mode Q"):
        load_checkpoint(run / "checkpoint.pth.tar")
    ck = load_checkpoint(run / "checkpoint.pth.tar", options=ImportOptions(mode="Q", act_bits=(3, 5)))
    diff, argmax = agree("cifar10_resnet20_q_3_5", ck.model, rounded=False)
    assert diff <= TOL and argmax == 1.0


def test_shift_depth_counts_from_the_end(tmp_path) -> None:
    ck = load_checkpoint(run_folder("mnist_linear_q_depth1_3_5", tmp_path))
    assert [n for n, _ in named_shift_layers(ck.model)] == ["fc3"]
    ck = load_checkpoint(run_folder("mnist_conv_ps_depth1_3_5", tmp_path))
    assert [n for n, _ in named_shift_layers(ck.model)] == ["conv2", "fc1", "fc2"]


def test_deepshift_selection_rules() -> None:
    lin = get_model("simple_linear")
    assert deepshift_selection(lin, 2, convert_all_linear=False) == ["fc2", "fc3"]
    conv = get_model("simple_conv")
    assert deepshift_selection(conv, 0) == ["fc1", "fc2"]          # its conv scripts convert every Linear
    r20 = get_model("resnet20")
    assert deepshift_selection(r20, 1) == ["layer3.2.conv2", "fc"]
    assert [n for n, _ in deepshift_order(r20)][:3] == ["fc", "layer3.2.conv2", "layer3.2.conv1"]


def test_overrides_win(tmp_path) -> None:
    run = run_folder("mnist_conv_q_3_5", tmp_path)
    ck = load_checkpoint(run, options=ImportOptions(numerics="exact", rounding="nearest", layers=("fc2",)))
    layers = dict(named_shift_layers(ck.model))
    assert list(layers) == ["fc2"] and layers["fc2"].config.numerics == "exact"
    assert layers["fc2"].config.rounding == "nearest"
    assert isinstance(ck.model.conv1, nn.Conv2d) and not isinstance(ck.model.conv1, Conv2dShift)


def test_exact_numerics_differ_from_the_original_at_8_bits(tmp_path) -> None:
    """The documented differences are real on these files: exact numerics do not reproduce a Q(3,5) run."""
    run = run_folder("mnist_conv_ps_3_5", tmp_path)
    ds = load_checkpoint(run)
    ex = load_checkpoint(run, options=ImportOptions(numerics="exact"))
    assert isinstance(ds.model.fc2, LinearShift) and ds.model.fc2.config.act_bits is None   # PS linear: float
    assert ex.model.fc2.config.act_bits == (3, 5)
    assert agree("mnist_conv_ps_3_5", ds.model)[0] <= TOL
    assert agree("mnist_conv_ps_3_5", ex.model)[0] > 1e-3


def test_truncated_file_is_a_clear_error(tmp_path) -> None:
    run = run_folder("mnist_linear_ps_3_5", tmp_path)
    data = (run / "weights.pth").read_bytes()
    (run / "weights.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a PyTorch checkpoint or is truncated"):
        load_checkpoint(run / "weights.pth")


def test_float_run_is_refused_unless_allowed(tmp_path) -> None:
    run = run_folder("mnist_linear_q_16_16", tmp_path, files=("weights.pth",), command_args=False)
    sd = torch.load(run / "weights.pth")
    torch.save({k: v + 1e-3 for k, v in sd.items()}, run / "weights.pth")   # not powers of two any more
    with pytest.raises(ValueError, match="--allow-float"):
        load_checkpoint(run / "weights.pth")
    ck = load_checkpoint(run / "weights.pth", options=ImportOptions(allow_float=True))
    assert ck.config is None and not list(named_shift_layers(ck.model))


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_never_run(tmp_path) -> None:
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"fc.weight": torch.ones(2, 2)}, "x": _Evil(str(marker))}, tmp_path / "evil.pth")
    obj = load_pickled(tmp_path / "evil.pth")
    assert isinstance(obj["x"], PickledObject) and class_path(obj["x"]).endswith(".system")
    assert not marker.exists()
