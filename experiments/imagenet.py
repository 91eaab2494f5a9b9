#!/usr/bin/env python
"""Train / evaluate ImageNet models (FP32, DeepShift-Q or DeepShift-PS) — needs torchvision.

torchvision supplies the architectures (``-a resnet18``, ``resnet50``, ``mobilenet_v2``, ``vgg16`` ...), their
optional pretrained weights (``--pretrained``) and the standard transforms (train: RandomResizedCrop 224 +
flip; test: Resize 256 + CenterCrop 224). It is imported lazily: without it this script exits with a clear
message (``pip install 'shiftcomp[vision]'``) and the rest of shiftcomp is unaffected.

Data: ``--data ROOT`` with ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*`` (ImageFolder layout), read
with shiftcomp's own ImageFolder reader (Pillow). Defaults follow DeepShift: SGD lr 0.1, momentum 0.9,
wd 1e-4, LR / 10 every 30 epochs, 90 epochs, batch 256.

Example::

    python experiments/imagenet.py --data /data/imagenet -a resnet18 --pretrained -st Q \\
        --lr 1e-3 --lr-step-size 5 --epochs 15 --desc from_pretrained -j 8
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from shiftcomp.training import DatasetDefaults, UsageError, add_common_args, run_experiment, run_main

DEFAULTS = DatasetDefaults(batch_size=256, test_batch_size=256, lr=0.1, momentum=0.9, wd=1e-4, epochs=90, opt="sgd",
                           lr_schedule="step", lr_milestones=[], workers=4)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision():
    try:
        import torchvision
    except ImportError as exc:
        raise SystemExit("experiments/imagenet.py needs torchvision (architectures, pretrained weights, transforms):"
                         " pip install 'shiftcomp[vision]'  (or: pip install torchvision matching your torch)") from exc
    return torchvision


def build_parser() -> argparse.ArgumentParser:
    """Argument parser: ``-a/--arch`` (a torchvision model name), ``--pretrained`` plus the common flags."""
    p = argparse.ArgumentParser(description="DeepShift ImageNet experiments (needs torchvision)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-a", "--arch", default="resnet18", help="torchvision.models architecture name")
    p.add_argument("--pretrained", action="store_true", help="start from torchvision's pretrained weights")
    p.add_argument("--num-classes", dest="num_classes", type=int, default=1000, help="number of classes")
    add_common_args(p, DEFAULTS)
    p.set_defaults(lr_step_size=None)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, and return the result dict of ``run_experiment``."""
    args = build_parser().parse_args(argv)
    tv = _torchvision()
    from torchvision import transforms as T

    if args.lr_schedule is None and args.lr_step_size is None:
        args.lr_step_size = 30
    names = tv.models.list_models(module=tv.models)
    if args.arch not in names:
        print(f"error: -a/--arch {args.arch!r} is not a torchvision architecture; known: {', '.join(sorted(names))}",
              file=sys.stderr)
        raise SystemExit(2)

    def build_model():
        weights = "DEFAULT" if args.pretrained else None
        return tv.models.get_model(args.arch, weights=weights, num_classes=args.num_classes)

    def build_data(a: argparse.Namespace):
        from shiftcomp.data import ImageFolderDataset, find_split_dir

        if a.data is None:
            raise UsageError("imagenet.py needs --data ROOT (ROOT/train/<class>/*, ROOT/val/<class>/*)")
        norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train_t = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        test_t = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
        return (ImageFolderDataset(find_split_dir(a.data, ("train",)), train_t),
                ImageFolderDataset(find_split_dir(a.data, ("val", "test")), test_t))

    return run_main(lambda: run_experiment(
        args, dataset="imagenet", arch=args.arch, build_model=build_model, build_data=build_data,
        input_shape=(3, 224, 224), default_schedule="step",
        argv=[sys.argv[0] if argv is None else "experiments/imagenet.py", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    main()
