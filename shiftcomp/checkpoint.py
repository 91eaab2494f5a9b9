"""Rebuild a model from a training run's checkpoint (the files ``experiments/*.py`` write).

A checkpoint (``checkpoint.pth.tar`` / ``model_best.pth.tar``) records the zoo architecture (``arch``), the
``ShiftConfig`` as a dict (``shift_config``, None for FP32 runs) and the ``state_dict``, so nothing but the
path is needed. A run folder may be given instead of a file (``model_best.pth.tar`` is preferred there).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_NAMES = ("model_best.pth.tar", "checkpoint.pth.tar")


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, in eval mode, plus what the checkpoint said about it."""

    model: nn.Module
    arch: str
    dataset: str | None
    config: Any  # ShiftConfig | None
    input_shape: tuple[int, ...]  # per sample (C, H, W)
    path: Path
    epoch: int | None
    acc1: float | None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file for ``path`` (a file, or a run folder holding one of :data:`CHECKPOINT_NAMES`)."""
    p = Path(path)
    if p.is_dir():
        for name in CHECKPOINT_NAMES:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p} holds none of {', '.join(CHECKPOINT_NAMES)}")
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}")
    return p


def load_checkpoint(path: str | os.PathLike, arch: str | None = None) -> LoadedCheckpoint:
    """Rebuild the model a training run saved.

    Args:
        path: a checkpoint file or a run folder.
        arch: zoo name, needed only for a bare ``state_dict`` file that does not record it.

    Raises:
        FileNotFoundError: nothing to load; ValueError: the file is not a shiftcomp/DeepShift checkpoint or
        the architecture is unknown.
    """
    from shiftcomp.config import ShiftConfig
    from shiftcomp.convert import convert
    from shiftcomp.models import INPUT_SHAPES, get_model

    file = find_checkpoint(path)
    try:
        obj = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for foreign files
        raise ValueError(f"{file} is not a PyTorch checkpoint: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{file} holds a {type(obj).__name__}, not a checkpoint dict")
    state = obj.get("state_dict", obj)
    arch = obj.get("arch", arch)
    if arch is None:
        raise ValueError(f"{file} does not record its architecture: pass arch=... (e.g. --arch simple_conv)")
    model = get_model(arch, num_classes=_num_classes(state))
    plan = (obj.get("architecture") or {}).get("decomposition")
    if plan:  # a run trained by decomposition: rebuild its factor chains first
        from shiftcomp.decompose import apply_plan

        apply_plan(model, plan)
    cfg_dict = obj.get("shift_config")
    config = ShiftConfig.from_dict(cfg_dict) if cfg_dict else None
    if config is not None:
        convert(model, config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{file} does not match {arch} with config {config}: missing {list(missing)[:5]}, "
                         f"unexpected {list(unexpected)[:5]}")
    model.eval()
    return LoadedCheckpoint(model=model, arch=arch, dataset=obj.get("dataset"), config=config,
                            input_shape=tuple(INPUT_SHAPES[arch]), path=file, epoch=obj.get("epoch"),
                            acc1=obj.get("acc1"))


def _num_classes(state: dict[str, torch.Tensor]) -> int:
    """Logit count from the last 1-D bias or 2-D weight-like tensor of the state dict (10 if unknown)."""
    for key in reversed(list(state)):
        t = state[key]
        if key.endswith("bias") and t.dim() == 1:
            return int(t.shape[0])
    return 10
