"""Helpers for the DeepShift fixtures in tests/fixtures/deepshift/ (files written by the original code)."""
from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "deepshift"
MNIST_RUNS = sorted(p.name for p in FIXTURES.glob("mnist_*") if p.is_dir())
CIFAR_RUNS = sorted(p.name for p in FIXTURES.glob("cifar10_*") if p.is_dir())


def run_folder(name: str, dest: Path, files: tuple[str, ...] | None = None, command_args: bool = True) -> Path:
    """Rebuild the run folder ``name`` under ``dest`` as DeepShift wrote it (``files``: a subset of its files)."""
    src = FIXTURES / name
    out = dest / name
    out.mkdir(parents=True, exist_ok=True)
    if command_args:
        shutil.copy(src / "command_args.txt", out / "command_args.txt")
    for xz in sorted(src.glob("*.xz")):
        if files is None or xz.stem in files:
            (out / xz.stem).write_bytes(lzma.decompress(xz.read_bytes()))
    return out


def images(name: str) -> torch.Tensor:
    """The fixed inputs the original forward was run on."""
    return torch.load(FIXTURES / ("mnist_images.pt" if name.startswith("mnist") else "cifar_images.pt"))


def original(name: str, rounded: bool = True) -> torch.Tensor:
    """The original forward's outputs (MNIST: log-probabilities, its models end in log_softmax)."""
    f = FIXTURES / name / ("original_logits_rounded.pt" if rounded and name.startswith("cifar") else
                           "original_logits.pt")
    return torch.load(f)


def comparable(name: str, y: torch.Tensor) -> torch.Tensor:
    """shiftcomp's logits in the original's output form (the zoo MNIST models return logits, not log-probs)."""
    return torch.log_softmax(y, dim=1) if name.startswith("mnist") else y
