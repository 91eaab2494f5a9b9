"""Rebuild a model from a training run's files: shiftcomp's own checkpoints and the original DeepShift's.

A shiftcomp checkpoint (``checkpoint.pth.tar`` / ``model_best.pth.tar`` written by ``experiments/*.py``)
records the zoo architecture (``arch``), the ``ShiftConfig`` as a dict (``shift_config``, None for FP32 runs)
and the ``state_dict``, so nothing but the path is needed. A run folder may be given instead of a file
(``model_best.pth.tar`` is preferred there).

Everything else -- a DeepShift run folder, ``weights.pth``, ``model.pth`` or a DeepShift
``checkpoint.pth.tar`` -- goes through :mod:`shiftcomp.checkpoint_deepshift`, which reads the files as
DeepShift wrote them (pickled objects of classes that are not importable here are read without running them,
:mod:`shiftcomp.checkpoint_pickle`) and defaults to ``numerics="deepshift"``.
"""
from __future__ import annotations

import dataclasses
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
    summary: str = ""          # one line: where the model and its numerics came from
    origin: str = "shiftcomp"  # "shiftcomp" or "deepshift"


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


def load_checkpoint(path: str | os.PathLike, arch: str | None = None,
                    options: "ImportOptions | None" = None) -> LoadedCheckpoint:
    """Rebuild the model a training run saved (shiftcomp's or DeepShift's, see the module doc).

    Args:
        path: a checkpoint file or a run folder.
        arch: zoo name, needed only for a bare ``state_dict`` file that does not record it.
        options: :class:`~shiftcomp.checkpoint_deepshift.ImportOptions` for DeepShift files (mode, bits,
            layers, numerics ...); a shiftcomp checkpoint records all of that and refuses them.

    Raises:
        FileNotFoundError: nothing to load; ValueError: the file is not a shiftcomp/DeepShift checkpoint, the
        architecture is unknown, or the file does not say enough (the message names the flag to pass).
    """
    from shiftcomp.checkpoint_deepshift import ImportOptions, import_deepshift, is_deepshift_folder
    from shiftcomp.checkpoint_pickle import load_pickled
    from shiftcomp.config import ShiftConfig
    from shiftcomp.convert import convert
    from shiftcomp.models import INPUT_SHAPES, get_model

    options = options or ImportOptions()
    if arch is not None and options.arch is None:
        options = dataclasses.replace(options, arch=arch)
    p = Path(path)
    if p.is_dir() and not (p / "shift_config.json").is_file() and is_deepshift_folder(p):  # not one of ours
        return _from_deepshift(import_deepshift(p, options), INPUT_SHAPES)
    file = find_checkpoint(path)
    try:
        obj = load_pickled(file)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for foreign files
        raise ValueError(f"{file} is not a PyTorch checkpoint or is truncated ({type(e).__name__}: {str(e)[:120]}); "
                         f"check that it is complete (not truncated)") from None
    if not (isinstance(obj, dict) and "shift_config" in obj):
        return _from_deepshift(import_deepshift(file, options), INPUT_SHAPES)
    given = options.given()
    if [g for g in given if g != "arch"]:
        raise ValueError(f"{file} is a shiftcomp checkpoint that records its ShiftConfig; "
                         f"{', '.join('--' + g.replace('_', '-') for g in given if g != 'arch')} apply only to "
                         f"DeepShift files: drop them")
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
    chosen = obj.get("shift_layers")  # written when a layer subset was converted (convert --layers/--shift-depth)
    if config is not None:
        convert(model, config, filter_fn=None if chosen is None else (lambda m, fqn: fqn in set(chosen)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{file} does not match {arch} with config {config}: missing {list(missing)[:5]}, "
                         f"unexpected {list(unexpected)[:5]}")
    model.eval()
    return LoadedCheckpoint(model=model, arch=arch, dataset=obj.get("dataset"), config=config,
                            input_shape=tuple(INPUT_SHAPES[arch]), path=file, epoch=obj.get("epoch"),
                            acc1=obj.get("acc1"))


def _from_deepshift(imp, input_shapes) -> LoadedCheckpoint:
    return LoadedCheckpoint(model=imp.model, arch=imp.arch, dataset=imp.dataset, config=imp.config,
                            input_shape=tuple(input_shapes[imp.arch]), path=imp.path, epoch=imp.epoch,
                            acc1=imp.acc1, summary=imp.summary, origin="deepshift")


def _num_classes(state: dict[str, torch.Tensor]) -> int:
    """Logit count from the last 1-D bias or 2-D weight-like tensor of the state dict (10 if unknown)."""
    for key in reversed(list(state)):
        t = state[key]
        if key.endswith("bias") and t.dim() == 1:
            return int(t.shape[0])
    return 10
