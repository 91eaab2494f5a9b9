"""Every bad input to the CLI ends in exit code 2 and one line naming the problem and the fix (no traceback)."""
from __future__ import annotations

import torch

from deepshift_fixtures import run_folder
from shiftcomp.cli import main
from shiftcomp.models import get_model


def fails(capsys, argv: list[str], *needles: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_ps_weights_given_to_convert(capsys, tmp_path) -> None:
    run = run_folder("mnist_conv_ps_3_5", tmp_path, files=("weights.pth",), command_args=False)
    fails(capsys, ["convert", "simple_conv", "--weights", str(run / "weights.pth"), "-o", str(tmp_path / "o.tar")],
          "shift parameters", "shiftcomp compile")


def test_torchvision_resnet18_state_dict_for_the_cifar_resnet18(capsys, tmp_path) -> None:
    torch.save(get_model("resnet18_imagenet", num_classes=1000).state_dict(), tmp_path / "tv.pth")
    fails(capsys, ["convert", "resnet18", "--weights", str(tmp_path / "tv.pth"), "-o", str(tmp_path / "o.tar")],
          "resnet18_imagenet")


def test_torchvision_state_dict_loads_into_the_imagenet_resnet(capsys, tmp_path) -> None:
    torch.save(get_model("resnet18_imagenet", num_classes=1000).state_dict(), tmp_path / "tv.pth")
    rc = main(["convert", "resnet18_imagenet", "--num-classes", "1000", "--weights", str(tmp_path / "tv.pth"),
               "--shift-depth", "1", "-o", str(tmp_path / "o.tar")])
    assert rc == 0
    assert "2 shift layers" in capsys.readouterr().out   # layer4.1.conv2 and fc: counted from the end


def test_truncated_weights(capsys, tmp_path) -> None:
    torch.save(get_model("simple_linear").state_dict(), tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "w.pth").write_bytes(data[:1000])
    fails(capsys, ["convert", "simple_linear", "--weights", str(tmp_path / "w.pth"), "-o", str(tmp_path / "o")],
          "not a PyTorch checkpoint or is truncated", "truncated")


def test_missing_path_and_unknown_arch(capsys, tmp_path) -> None:
    fails(capsys, ["verify", str(tmp_path / "nope")], "nope")
    fails(capsys, ["convert", "resnet9000", "-o", str(tmp_path / "o")], "unknown model", "known")
    run = run_folder("mnist_linear_q_3_5", tmp_path)
    fails(capsys, ["compile", str(run), "--arch", "resnet20", "-o", str(tmp_path / "m.so")], "do not fit resnet20")


def test_unrounded_q_checkpoint_needs_mode(capsys, tmp_path) -> None:
    run = run_folder("cifar10_resnet20_q_3_5", tmp_path, files=("checkpoint.pth.tar",), command_args=False)
    fails(capsys, ["verify", str(run / "checkpoint.pth.tar")], "--mode Q", "command_args.txt")


def test_ps_file_with_mode_q(capsys, tmp_path) -> None:
    run = run_folder("mnist_linear_ps_3_5", tmp_path)
    fails(capsys, ["verify", str(run), "--mode", "Q"], "PS parameters", "--mode PS")


def test_verify_with_no_shift_layer_needs_allow_float(capsys, tmp_path) -> None:
    run = run_folder("mnist_linear_q_16_16", tmp_path, files=("weights.pth",), command_args=False)
    sd = torch.load(run / "weights.pth")
    torch.save({k: v + 1e-3 for k, v in sd.items()}, run / "weights.pth")
    fails(capsys, ["verify", str(run / "weights.pth")], "--allow-float")


def test_shiftcomp_fp32_checkpoint_verify_refused(capsys, tmp_path) -> None:
    torch.save({"arch": "simple_linear", "shift_config": None, "state_dict": get_model("simple_linear").state_dict()},
               tmp_path / "f.tar")   # shiftcomp's FP32 run checkpoint
    fails(capsys, ["verify", str(tmp_path / "f.tar")], "0 shift layers", "--allow-float")


def test_bad_artifact_in_verify(capsys, tmp_path) -> None:
    run = run_folder("mnist_linear_q_depth1_3_5", tmp_path)
    (tmp_path / "bad.so").write_bytes(b"not an artifact at all")
    fails(capsys, ["verify", str(run), "--artifact", str(tmp_path / "bad.so")], str(tmp_path / "bad.so"))


def test_deepshift_q_run_given_to_convert(capsys, tmp_path) -> None:
    """A DeepShift-Q run converted the LAST layer (-s counts from the end): re-converting it is refused."""
    run = run_folder("mnist_linear_q_depth1_3_5", tmp_path)
    fails(capsys, ["convert", "simple_linear", "--weights", str(run / "weights.pth"), "--depth", "1",
                   "-o", str(tmp_path / "o.tar")], "shift model already", "shiftcomp compile", "from the end")
