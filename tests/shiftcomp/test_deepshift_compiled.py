"""DeepShift fixtures through the whole compiler: `shiftcomp compile RUN_DIR -o model.so` and
`shiftcomp verify RUN_DIR` with no flags, and the compiled model's outputs against the original forward."""
from __future__ import annotations

import pytest

from deepshift_fixtures import CIFAR_RUNS, MNIST_RUNS, comparable, images, original, run_folder
from shiftcomp.checkpoint import load_checkpoint
from shiftcomp.cli import main
from shiftcomp.compiler import compile

FAST = ["mnist_conv_ps_3_5"]   # a few minutes each on 2 loaded cores: the rest run with -m slow


def check(name: str, tmp_path) -> None:
    run = run_folder(name, tmp_path)
    assert main(["compile", str(run), "-o", str(tmp_path / "model.so")]) == 0
    assert (tmp_path / "model.so").stat().st_size > 0
    assert main(["verify", str(run), "--artifact", str(tmp_path / "model.so")]) == 0   # the file reproduces it
    ck = load_checkpoint(run)
    x = images(name)
    cm = compile(ck.model, (x,))
    assert cm.audit.datapath_multiplies == 0
    y = comparable(name, cm(x))
    want = original(name)
    assert float((y - want).abs().max()) <= 1e-4
    assert bool((y.argmax(1) == want.argmax(1)).all())


@pytest.mark.parametrize("name", FAST)
def test_compile_and_verify_with_no_flags(name, tmp_path) -> None:
    check(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MNIST_RUNS + CIFAR_RUNS if n not in FAST])
def test_every_fixture_compiles_and_verifies(name, tmp_path) -> None:
    check(name, tmp_path)
