#!/usr/bin/env python
"""Train / evaluate CIFAR-10 models (FP32, DeepShift-Q or DeepShift-PS).

Data: ``--data ROOT`` with ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (or ``val/``), e.g. the JPEG
copy of CIFAR-10 unpacked from ``cifar10-jpg.tar.gz`` (``ROOT`` may also be its parent). Images are decoded
once into memory (``--cache memory``, default) or via ``ROOT/<split>.u8cache.pt`` (``--cache disk``, fastest
for repeated runs). Augmentation: random crop 32 with padding 4 and horizontal flip.

Examples::

    python experiments/cifar10.py --data /work/data/cifar10 -a resnet20 -s 0          # FP32 baseline
    python experiments/cifar10.py --data /work/data/cifar10 -a resnet20 -st Q \\
        --weights models/cifar10/resnet20/fp32/weights.pth --lr 1e-3 --lr-step-size 5 --epochs 15 --desc from_fp32
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from shiftcomp.models import INPUT_SHAPES, MODELS, get_model
from shiftcomp.training import DatasetDefaults, UsageError, add_common_args, run_experiment, run_main

DEFAULTS = DatasetDefaults(batch_size=128, test_batch_size=500, lr=0.1, momentum=0.9, wd=1e-4, epochs=200, opt="sgd",
                           lr_schedule="multistep", lr_milestones=[80, 120, 160, 180], workers=0)
# the zoo's pre-converted adder models are reached with --layer-type adder|shiftadd on their float base;
# the ImageNet ResNets need 224x224 inputs
ARCHS = sorted(n for n in MODELS
               if not n.startswith("simple_") and not n.endswith(("_adder", "_shiftadd", "_imagenet")))


def build_parser() -> argparse.ArgumentParser:
    """Argument parser: ``-a/--arch``, ``--cache`` plus the common flags."""
    p = argparse.ArgumentParser(description="DeepShift CIFAR-10 experiments",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-a", "--arch", choices=ARCHS, default="resnet20", help="model architecture")
    p.add_argument("--cache", choices=["none", "memory", "disk"], default="memory",
                   help="none: decode JPEGs every epoch; memory: decode once per run; disk: reuse <split>.u8cache.pt")
    add_common_args(p, DEFAULTS)
    return p


def _build_data(args: argparse.Namespace):
    from pathlib import Path

    from shiftcomp import data as D

    if args.data is None:
        raise UsageError("cifar10.py needs --data ROOT (ROOT/train/<class>/*.jpg, ROOT/test/<class>/*.jpg)")
    progress = not args.no_progress and sys.stderr.isatty()
    if args.cache != "none":
        return D.load_cifar10(args.data, cache=args.cache, progress=progress)
    root = Path(args.data)
    if not (root / "train").is_dir() and (root / "cifar10" / "train").is_dir():
        root = root / "cifar10"
    return (_LazyFolder(D.find_split_dir(root, ("train",)), D.RandomCropFlip()),
            _LazyFolder(D.find_split_dir(root, ("test", "val")), None))


class _LazyFolder:
    """ImageFolder split decoded on access, normalised like ``load_cifar10``."""

    def __init__(self, root, augment) -> None:
        import torch

        from shiftcomp import data as D

        self.ds = D.ImageFolderDataset(root)
        self.augment = augment
        self.mean = torch.tensor(D.CIFAR10_MEAN).view(-1, 1, 1)
        self.std = torch.tensor(D.CIFAR10_STD).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        img, y = self.ds[i]
        if self.augment is not None:
            img = self.augment(img)
        return img.float().div_(255).sub_(self.mean).div_(self.std), y


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, and return the result dict of ``run_experiment``."""
    args = build_parser().parse_args(argv)
    return run_main(lambda: run_experiment(
        args, dataset="cifar10", arch=args.arch, build_model=lambda: get_model(args.arch, 10),
        build_data=_build_data, input_shape=INPUT_SHAPES[args.arch], default_schedule="multistep",
        argv=[sys.argv[0] if argv is None else "experiments/cifar10.py", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    main()
