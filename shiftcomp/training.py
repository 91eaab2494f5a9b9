"""The training loop shared by ``experiments/{mnist,cifar10,imagenet}.py``.

One function, :func:`run_experiment`, does: (DDP setup) -> seed -> build model -> optionally load FP32
``--weights`` -> ``shiftcomp.convert`` (``--shift-depth != 0``) -> optimizer/scheduler -> optional ``--resume``
-> train/evaluate epochs -> logs and checkpoints. Command-line flags are declared once in
:func:`add_common_args`; each script adds only its ``--arch``/``--type`` and dataset defaults.

Output folder (DeepShift convention, under ``--out-dir``, default ``./models``)::

    <out>/<dataset>/<arch>/shift_<q|ps>_<depth|all>_wb_<b>[_ab_<I>_<F>][_<desc>]/   shift runs
    <out>/<dataset>/<arch>/fp32[_<desc>]/                                         FP32 runs (-s 0)

holding ``command_args.txt``, ``model_summary.txt``, ``shift_config.json``, ``train_log.csv``,
``test_log.csv``, ``eval_log.csv`` (``-e`` runs), ``checkpoint.pth.tar`` (written atomically after every
epoch: model, optimizer, scheduler, RNG states, best accuracy), ``model_best.pth.tar``, ``weights.pth``
(final ``state_dict``) and, for shift runs, ``integer_weights.pth`` (``{layer: {"shift": int8, "sign": int8}}``).
Only rank 0 writes.

Training by decomposition (``--decompose tucker|cp|svd --decompose-epoch E --rank R|vbmf [--recompose-epoch
R2]``): after E epochs the float model is factorised by :func:`shiftcomp.decompose` (and, for shift runs,
converted only then: the first E epochs train FP32); after R2 epochs :func:`shiftcomp.recompose` multiplies
the factors back. At each change the optimizer starts fresh (``--decompose-optimizer carry`` keeps the state of
surviving parameters) while the LR schedule keeps its position. ``decompose_report.csv`` holds the per-layer
report; ``train_log.csv`` has each epoch's wall time (``epoch_time_s``: the change, training and evaluation),
its CPU time (``cpu_time_s``, the same span: unlike wall time it does not grow while the process waits for
a shared or paused CPU) and the architecture it trained (``arch``: original, decomposed, recomposed). Checkpoints record the module
tree they hold (``architecture``: the decomposition plan, whether shift layers were converted), so
``--resume`` rebuilds it before loading.

Resume (``--resume``): restores everything saved in the checkpoint and continues with the next epoch; the
RNG states make the continued run bit-identical to an uninterrupted one (same seed, threads and data).
Rows of the CSV logs newer than the checkpoint (an epoch killed after logging) are dropped first.

PS runs: the ``shift``/``sign`` parameters get no optimizer weight decay; ``wd * 0.5 * sum((2**shift)**2)``
over all PS ``shift`` parameters is added to the loss instead (as DeepShift).

DDP: when launched by ``torchrun`` (``WORLD_SIZE`` set and > 1), ``init_process_group("gloo")``, a
``DistributedSampler`` shards the training set, ``-b`` is the global batch (split evenly over ranks), test
accuracy is summed over rank shards, and the model is wrapped in ``DistributedDataParallel``.
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import json
import math
import os
import random
import re
import shlex
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "OPTIMIZERS", "add_common_args", "DatasetDefaults", "run_dir_name", "shift_config_from_args", "shift_layer_types",
    "ps_parameters", "ps_regularizer", "build_optimizer", "build_scheduler", "load_weights", "atomic_save",
    "train_epoch", "evaluate", "run_experiment", "run_main", "DistInfo", "setup_distributed", "progress_enabled",
    "DecomposeSchedule", "decompose_schedule_from_args", "parse_rank", "UsageError", "check_args", "check_layer_flags",
]

OPTIMIZERS = ("sgd", "adam", "adadelta", "adagrad", "rmsprop", "radam")
CHECKPOINT = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
TRAIN_LOG = "train_log.csv"
TEST_LOG = "test_log.csv"
EVAL_LOG = "eval_log.csv"
TRAIN_FIELDS = ["epoch", "lr", "train_loss", "train_acc1", "train_acc5", "time_s", "epoch_time_s", "arch",
                "cpu_time_s"]
TEST_FIELDS = ["epoch", "test_loss", "test_acc1", "test_acc5", "best_acc1", "time_s"]


# --------------------------------------------------------------------------------------------------- arguments


@dataclass
class DatasetDefaults:
    """Per-script defaults for the common flags (the DeepShift values for that data set)."""

    batch_size: int = 128
    test_batch_size: int = 1000
    lr: float = 0.1
    momentum: float = 0.9
    wd: float = 1e-4
    epochs: int = 200
    opt: str = "sgd"
    lr_schedule: str = "multistep"          # used when --lr-step-size is not given
    lr_milestones: list[int] = field(default_factory=lambda: [80, 120, 160, 180])
    workers: int = 0


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse ``type``: an int ``>= minimum`` (argparse reports a bad value in one line and exits 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = "int"
    return parse


def add_common_args(parser: argparse.ArgumentParser, defaults: DatasetDefaults | None = None) -> argparse.ArgumentParser:
    """Add the flags shared by all experiment scripts (DeepShift names where sensible).

    The script adds its own model selector (``-a/--arch`` or ``--type``) and ``--data`` semantics.
    """
    d = defaults or DatasetDefaults()
    g = parser.add_argument_group("shift conversion")
    g.add_argument("-s", "--shift-depth", "--shift_depth", dest="shift_depth", type=int, default=None,
                   help="convert the first N Conv2d/Linear layers (module order) to shift layers; "
                        "default: all; 0 = plain FP32 model")
    g.add_argument("-st", "--shift-type", dest="shift_type", type=str.upper, choices=["Q", "PS"], default="Q",
                   help="DeepShift-Q (float weights rounded to powers of 2) or DeepShift-PS (trained shift/sign)")
    g.add_argument("-wb", "--weight-bits", dest="weight_bits", type=int, default=5,
                   help="bits per shift weight incl. sign, 2..8 (default 5)")
    g.add_argument("-ab", "--activation-bits", dest="activation_bits", type=int, nargs=2, metavar=("I", "F"),
                   default=None, help="fixed-point activations Q(I,F): I integer bits incl. sign, F fraction bits; "
                                      "default: float activations (DeepShift defaulted to 16 16)")
    g.add_argument("--rounding", choices=["nearest", "floor"], default="nearest",
                   help="activation rounding to fixed point (default nearest, ties to even; DeepShift: floor)")
    g.add_argument("--shift-range", dest="shift_range", type=int, nargs=2, metavar=("LO", "HI"), default=None,
                   help="allowed shift range (default: the -wb default, e.g. [-15, 0] for Q 5 bit)")
    g.add_argument("--freeze-sign", dest="freeze_sign", action="store_true", help="PS: do not train the signs")
    g.add_argument("--act-grad", dest="act_grad", choices=["clip", "identity"], default="clip",
                   help="activation STE: zero outside the clamp range (clip) or everywhere identity (DeepShift)")
    g.add_argument("--layer-type", dest="layer_type", choices=["shift", "adder", "shiftadd"], default="shift",
                   help="shift: DeepShift layers; adder: AdderNet (-sum|x - w|); shiftadd: ShiftAddNet (each conv -> "
                        "shift conv + adder conv); -ab sets the activation format of both kinds")
    g.add_argument("--zero-free", dest="zero_free", action="store_true",
                   help="DenseShift zero-free shift codes (no zero weight; b bits give 2**(b-1) shift levels)")
    g.add_argument("--adder-weight-bits", dest="adder_weight_bits", type=int, default=None,
                   help="adder weights' total bits with -ab (default: the activation width I+F)")
    g.add_argument("--adaptive-lr", dest="adaptive_lr", type=float, default=0.2,
                   help="AdderNet's adaptive learning-rate scale eta for adder weights (0 = off; default 0.2)")

    g = parser.add_argument_group("optimisation")
    g.add_argument("-opt", "--opt", "--optimizer", dest="opt", type=str.lower, choices=OPTIMIZERS, default=d.opt,
                   help=f"optimizer (default {d.opt}; use radam for PS)")
    g.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=d.lr, help=f"initial LR (default {d.lr})")
    g.add_argument("--lr-schedule", dest="lr_schedule", choices=["step", "multistep", "none"], default=None,
                   help=f"LR schedule; default: step if --lr-step-size is given, else {d.lr_schedule}")
    g.add_argument("--lr-step-size", "--lr-step", dest="lr_step_size", type=_int_at_least(1), default=None,
                   help="step schedule: multiply the LR by --lr-gamma every N epochs")
    g.add_argument("--lr-milestones", dest="lr_milestones", type=int, nargs="+", default=d.lr_milestones,
                   help=f"multistep schedule epochs (default {' '.join(map(str, d.lr_milestones)) or 'none'})")
    g.add_argument("--lr-gamma", dest="lr_gamma", type=float, default=0.1, help="LR decay factor (default 0.1)")
    g.add_argument("--momentum", type=float, default=d.momentum, help=f"momentum for sgd/rmsprop (default {d.momentum})")
    g.add_argument("--wd", "--weight-decay", dest="wd", type=float, default=d.wd, help=f"weight decay (default {d.wd})")
    g.add_argument("--epochs", type=_int_at_least(0), default=d.epochs, help=f"total epochs (default {d.epochs})")
    g.add_argument("-b", "--batch-size", dest="batch_size", type=_int_at_least(1), default=d.batch_size,
                   help=f"training batch size, global over DDP ranks (default {d.batch_size})")
    g.add_argument("--test-batch-size", dest="test_batch_size", type=_int_at_least(1), default=d.test_batch_size,
                   help=f"evaluation batch size (default {d.test_batch_size})")

    g = parser.add_argument_group("run")
    g.add_argument("--data", type=str, default=None, help="data location (see the script's help)")
    g.add_argument("-j", "--workers", type=_int_at_least(0), default=d.workers, help=f"data loader workers (default {d.workers})")
    g.add_argument("--weights", type=str, default=None,
                   help="start from these weights (state_dict or checkpoint; FP32 weights are loaded, then converted)")
    g.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue a run; without a value: the run folder's checkpoint.pth.tar (fresh start if none)")
    g.add_argument("-e", "--evaluate", action="store_true", help="only evaluate (use with --weights or --resume)")
    g.add_argument("--eval-exact", dest="eval_exact", action="store_true",
                   help="also evaluate the final model through the exact integer reference (needs -ab)")
    g.add_argument("--desc", type=str, default=None, help="suffix for the run folder name")
    g.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    g.add_argument("--out-dir", dest="out_dir", type=str, default="./models", help="root of run folders (default ./models)")
    g.add_argument("--threads", type=_int_at_least(1), default=None,
                   help="torch intra-op threads (default: torch's choice; under DDP: cores / local ranks)")
    g.add_argument("--train-subset", dest="train_subset", type=_int_at_least(1), default=None,
                   help="use a fixed random subset of N training samples (quick runs)")
    g.add_argument("--test-subset", dest="test_subset", type=_int_at_least(1), default=None,
                   help="use a fixed random subset of N test samples (quick runs)")
    g.add_argument("--no-progress", dest="no_progress", action="store_true", help="disable tqdm progress bars")
    _add_decompose_args(parser)
    return parser


def run_dir_name(args: argparse.Namespace) -> str:
    """Run folder name: ``fp32[_desc]`` or ``shift_<q|ps>_<depth|all>_wb_<b>[_ab_<I>_<F>][_desc]``."""
    if args.shift_depth == 0:
        name = "fp32"
    else:
        depth = "all" if args.shift_depth is None else str(args.shift_depth)
        layer_type = getattr(args, "layer_type", "shift")
        name = f"{layer_type}_{depth}" if layer_type == "adder" else \
            f"{layer_type}_{args.shift_type.lower()}_{depth}_wb_{args.weight_bits}"
        if getattr(args, "zero_free", False) and layer_type != "adder":
            name += "_zf"
        if args.activation_bits:
            name += "_ab_{}_{}".format(*args.activation_bits)
    if args.desc:
        name += f"_{args.desc}"
    return name


#: the flag that sets each config field (a config's ValueError names the field; the scripts name the flag)
_FLAG_OF_FIELD = {
    "ShiftConfig.mode": "-st/--shift-type", "ShiftConfig.weight_bits": "-wb/--weight-bits",
    "ShiftConfig.shift_range": "--shift-range", "ShiftConfig.act_bits": "-ab/--activation-bits",
    "ShiftConfig.rounding": "--rounding", "ShiftConfig.depth": "-s/--shift-depth",
    "ShiftConfig.freeze_sign": "--freeze-sign", "ShiftConfig.act_grad": "--act-grad",
    "ShiftConfig.zero_free": "--zero-free", "AdderConfig.weight_bits": "--adder-weight-bits",
    "AdderConfig.act_bits": "-ab/--activation-bits", "AdderConfig.rounding": "--rounding",
    "AdderConfig.depth": "-s/--shift-depth", "AdderConfig.act_grad": "--act-grad",
    "AdderConfig.adaptive_lr": "--adaptive-lr", "ShiftAddConfig.depth": "-s/--shift-depth",
}


def _flag_error(e: ValueError) -> UsageError:
    """A config's ValueError as a :class:`UsageError` that starts with the flag to change."""
    m = re.search(r"\b(ShiftConfig|AdderConfig|ShiftAddConfig)\.(\w+)", str(e))
    flag = _FLAG_OF_FIELD.get(m.group(0)) if m else None
    return UsageError(f"{flag}: {e}" if flag else str(e))


def check_layer_flags(args: argparse.Namespace) -> None:
    """Refuse flags that the chosen ``--layer-type`` would silently ignore.

    Raises:
        UsageError: e.g. ``-st PS`` or ``--zero-free`` with ``--layer-type adder`` (adder layers have no shift
            weights), or ``--adder-weight-bits`` without adder layers or without ``-ab``.
    """
    layer_type = getattr(args, "layer_type", "shift")
    if args.shift_depth == 0:
        return
    if layer_type == "adder":
        for flag, given in (("-st PS", args.shift_type == "PS"), ("--zero-free", getattr(args, "zero_free", False)),
                            ("--freeze-sign", args.freeze_sign), ("--shift-range", args.shift_range is not None)):
            if given:
                raise UsageError(f"{flag} applies to shift layers and --layer-type adder has none: use "
                                 f"--layer-type shiftadd (shift and adder layers) or drop {flag.split()[0]}")
    adder_bits = getattr(args, "adder_weight_bits", None)
    if adder_bits is not None:
        if layer_type == "shift":
            raise UsageError("--adder-weight-bits applies to adder layers: add --layer-type adder|shiftadd or drop it")
        if not args.activation_bits:
            raise UsageError("--adder-weight-bits needs fixed-point activations -ab I F (with float activations "
                             "the adder weights stay float)")


def shift_config_from_args(args: argparse.Namespace):
    """The config the flags describe: :class:`shiftcomp.ShiftConfig`, or with ``--layer-type adder|shiftadd`` an
    ``AdderConfig`` / ``ShiftAddConfig`` (None for FP32, ``-s 0``).

    Raises:
        UsageError: a flag value the config refuses; the message starts with the flag.
    """
    try:
        return _config_from_args(args)
    except UsageError:
        raise
    except ValueError as e:
        raise _flag_error(e) from None


def _config_from_args(args: argparse.Namespace):
    if args.shift_depth == 0:
        return None
    from shiftcomp.config import ShiftConfig

    shift = ShiftConfig(
        mode=args.shift_type,
        weight_bits=args.weight_bits,
        shift_range=tuple(args.shift_range) if args.shift_range else None,
        act_bits=tuple(args.activation_bits) if args.activation_bits else None,
        rounding=args.rounding,
        depth=args.shift_depth,
        freeze_sign=args.freeze_sign,
        act_grad=getattr(args, "act_grad", "clip"),
        zero_free=getattr(args, "zero_free", False),
    )
    layer_type = getattr(args, "layer_type", "shift")
    if layer_type == "shift":
        return shift
    from shiftcomp.adder_config import AdderConfig, ShiftAddConfig

    adder = AdderConfig(weight_bits=args.adder_weight_bits if args.activation_bits else None,
                        act_bits=shift.act_bits, rounding=shift.rounding, act_grad=shift.act_grad,
                        adaptive_lr=args.adaptive_lr or None)
    if layer_type == "adder":
        return dataclasses.replace(adder, depth=args.shift_depth)
    return ShiftAddConfig(shift=shift, adder=adder, depth=args.shift_depth)


# ------------------------------------------------------------------------------------------- shift parameters


def shift_layer_types() -> tuple[type, ...]:
    """``(shiftcomp.nn.ShiftLayer,)`` (base of LinearShift/Conv2dShift), or ``()`` if shiftcomp.nn is missing."""
    try:
        from shiftcomp.nn import ShiftLayer
    except ImportError:
        return ()
    return (ShiftLayer,)


def ps_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(shift params, sign params)`` of all PS shift layers in ``model`` (empty lists for Q/FP32 models)."""
    types = shift_layer_types()
    shifts: list[nn.Parameter] = []
    signs: list[nn.Parameter] = []
    for m in model.modules():
        if types and isinstance(m, types):
            s = m._parameters.get("shift")
            if isinstance(s, nn.Parameter):
                shifts.append(s)
            g = m._parameters.get("sign")
            if isinstance(g, nn.Parameter):
                signs.append(g)
    return shifts, signs


def ps_regularizer(model: nn.Module, wd: float) -> Callable[[], torch.Tensor] | None:
    """DeepShift's PS weight-decay term as a loss callable, ``wd * 0.5 * sum((2**shift_q)**2)``
    (``shiftcomp.nn.shift_weight_decay``); None when ``wd == 0`` or the model has no PS layers."""
    shifts, _ = ps_parameters(model)
    if wd == 0 or not shifts:
        return None
    from shiftcomp.nn import shift_weight_decay

    return lambda: shift_weight_decay(model, wd)


# ------------------------------------------------------------------------------------ optimizer and schedule


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Optimizer ``args.opt`` with LR ``args.lr``; weight decay ``args.wd`` except on PS shift/sign parameters."""
    shifts, signs = ps_parameters(model)
    no_wd = {id(p) for p in shifts + signs}
    decay = [p for p in model.parameters() if p.requires_grad and id(p) not in no_wd]
    plain = [p for p in model.parameters() if p.requires_grad and id(p) in no_wd]
    groups = [{"params": decay, "weight_decay": args.wd}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    opt, lr = args.opt, args.lr
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=args.momentum)
    if opt == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if opt == "adadelta":
        return torch.optim.Adadelta(groups, lr=lr)
    if opt == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if opt == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=args.momentum)
    if opt == "radam":
        return torch.optim.RAdam(groups, lr=lr)
    raise ValueError(f"unknown optimizer {opt!r}; choose from {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace,
                    default: str = "multistep") -> torch.optim.lr_scheduler.LRScheduler | None:
    """Epoch-wise LR schedule: ``step`` (every ``--lr-step-size``), ``multistep`` (``--lr-milestones``) or none."""
    kind = args.lr_schedule or ("step" if args.lr_step_size else default)
    if kind == "step":
        if not args.lr_step_size:
            raise ValueError("--lr-schedule step needs --lr-step-size")
        return torch.optim.lr_scheduler.StepLR(optimizer, args.lr_step_size, args.lr_gamma)
    if kind == "multistep" and args.lr_milestones:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_milestones, args.lr_gamma)
    return None


# -------------------------------------------------------------------------------------------------- file I/O


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` via a temporary file and ``os.replace`` (never leaves a torn file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], (dict, nn.Module)):
                return _extract_state_dict(obj[key])
        return obj
    raise TypeError(f"cannot find a state_dict in a {type(obj).__name__}")


def _strip_module_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load weights (a state_dict, a checkpoint with ``state_dict``, or a pickled module) into ``model``.

    A ``module.`` prefix (DataParallel/DDP) is stripped. Loading is strict.
    """
    obj = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(_strip_module_prefix(_extract_state_dict(obj)))


def _is_ps_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith(".shift") for k in sd) and any(k.endswith(".sign") for k in sd)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _truncate_csv(path: Path, last_epoch: int) -> None:
    """Keep only the rows of ``path`` with ``epoch <= last_epoch`` (the header stays)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = rows[0].keys() if rows else None
    if fields is None:
        return
    keep = [r for r in rows if int(r["epoch"]) <= last_epoch]
    if len(keep) != len(rows):
        _write_rows_with(path, list(fields), keep)


def _append_csv(path: Path, fields: list[str], row: dict[str, Any]) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as f:
            old = next(csv.reader(f), [])
        if old != fields:  # a log begun by an older version: rewrite it under the current header
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            _write_rows_with(path, fields, rows)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _write_rows_with(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _model_summary(model: nn.Module, config: Any, input_shape: Sequence[int] | None) -> str:
    lines = [repr(model), ""]
    types = shift_layer_types()
    total = sum(p.numel() for p in model.parameters())
    lines.append(f"parameters: {total:,}")
    n_float = sum(1 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and not (types and isinstance(m, types)))
    n_shift = sum(1 for m in model.modules() if types and isinstance(m, types))
    lines.append(f"shift layers: {n_shift}; remaining float Conv2d/Linear: {n_float}")
    if config is not None:
        cfg = config.to_dict() if hasattr(config, "to_dict") else repr(config)
        lines.append(f"shift config: {json.dumps(cfg, default=str)}")
    if input_shape is not None:
        lines.append(f"input shape per sample: {tuple(input_shape)}")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- DDP


@dataclass
class DistInfo:
    """Process-group facts: ``world_size`` 1 means no DDP."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Initialise a gloo process group when launched by torchrun (``WORLD_SIZE`` > 1), else a no-op."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def progress_enabled(args: argparse.Namespace, dist_info: DistInfo) -> bool:
    """tqdm bars only on rank 0, on a TTY, outside CI, and without ``--no-progress``."""
    return (not getattr(args, "no_progress", False) and dist_info.is_main and sys.stderr.isatty()
            and not os.environ.get("CI"))


# --------------------------------------------------------------------------------------------- epochs


def _topk_correct(output: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    maxk = min(max(ks), output.shape[1])
    pred = output.topk(maxk, dim=1).indices
    hit = pred.eq(target.view(-1, 1))
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, *,
                regularizer: Callable[[], torch.Tensor] | None = None, device: torch.device | str = "cpu",
                progress: bool = False, desc: str = "train") -> dict[str, float]:
    """One training epoch with cross-entropy (+ ``regularizer()``, e.g. the PS weight-decay term).

    Returns:
        ``{"loss": mean loss per sample, "acc1": top-1 %, "acc5": top-5 %, "n": samples}`` (this rank only).
    """
    from tqdm import tqdm

    model.train()
    total_loss, c1, c5, n = 0.0, 0, 0, 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        ce = F.cross_entropy(out, y)
        loss = ce + regularizer() if regularizer is not None else ce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        b = y.shape[0]
        total_loss += float(ce.detach()) * b
        k1, k5 = _topk_correct(out.detach(), y)
        c1, c5, n = c1 + k1, c5 + k5, n + b
        if progress:
            bar.set_postfix(loss=f"{total_loss / n:.4f}", acc=f"{100.0 * c1 / n:.2f}")
    n = max(n, 1)
    return {"loss": total_loss / n, "acc1": 100.0 * c1 / n, "acc5": 100.0 * c5 / n, "n": n}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, device: torch.device | str = "cpu", progress: bool = False,
             dist_info: DistInfo | None = None, desc: str = "test") -> dict[str, float]:
    """Evaluate cross-entropy and top-1/top-5 accuracy (%), summed over DDP ranks when ``dist_info`` is enabled."""
    from tqdm import tqdm

    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, correct1, correct5, n
    for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        x, y = x.to(device), y.to(device)
        out = model(x)
        k1, k5 = _topk_correct(out, y)
        sums += torch.tensor([float(F.cross_entropy(out, y, reduction="sum")), k1, k5, y.shape[0]], dtype=torch.float64)
    if dist_info is not None and dist_info.enabled:
        import torch.distributed as dist

        dist.all_reduce(sums)
    n = max(sums[3].item(), 1.0)
    return {"loss": sums[0].item() / n, "acc1": 100.0 * sums[1].item() / n, "acc5": 100.0 * sums[2].item() / n,
            "n": int(sums[3].item())}


@dataclass
class DecomposeSchedule:
    """When and how a run changes its architecture (``--decompose-epoch`` and friends).

    After ``epoch`` finished epochs the float model is decomposed with ``config`` (then converted to shift
    layers if the run has a shift config: the first epochs train FP32); after ``recompose_epoch`` (if set) the
    factors are multiplied back into the original layers. ``carry_optimizer``: keep the optimizer state of the
    parameters that survive the change (BatchNorm, layers left alone) instead of starting a fresh optimizer.
    The LR schedule continues either way.
    """

    epoch: int
    config: Any  # shiftcomp.decompose.DecomposeConfig
    recompose_epoch: int | None = None
    carry_optimizer: bool = False


def parse_rank(text: str) -> int | float | str:
    """``--rank``: ``vbmf``, an int >= 1, or a fraction in ``(0, 1]`` (``0.5``)."""
    if text.lower() == "vbmf":
        return "vbmf"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rank takes an int, a fraction like 0.5, or 'vbmf', not {text!r}") from None


def decompose_schedule_from_args(args: argparse.Namespace) -> DecomposeSchedule | None:
    """The :class:`DecomposeSchedule` the flags describe, None without ``--decompose``.

    Raises:
        UsageError: inconsistent flags (the scripts print it as one line and exit 2).
    """
    method = getattr(args, "decompose", None)
    if method is None:
        for flag in ("decompose_epoch", "recompose_epoch"):
            if getattr(args, flag, None) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --decompose tucker|cp|svd")
        return None
    from shiftcomp.decompose import DecomposeConfig

    epoch = args.decompose_epoch if args.decompose_epoch is not None else 0
    if not 0 <= epoch < args.epochs:
        raise UsageError(f"--decompose-epoch {epoch} must lie in [0, --epochs {args.epochs})")
    r2 = args.recompose_epoch
    if r2 is not None:
        if not epoch < r2 <= args.epochs:
            raise UsageError(f"--recompose-epoch {r2} must lie in (--decompose-epoch {epoch}, --epochs {args.epochs}]")
        if args.shift_depth != 0:
            raise UsageError("--recompose-epoch works on FP32 runs only (-s 0): shift factors cannot be multiplied "
                             "back exactly")
    try:
        config = DecomposeConfig(method=method, rank=args.rank)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return DecomposeSchedule(epoch, config, r2, args.decompose_optimizer == "carry")


class UsageError(ValueError):
    """Inconsistent command-line flags; the experiment scripts report it in one line and exit 2."""


def _add_decompose_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("training by decomposition")
    g.add_argument("--decompose", choices=["tucker", "cp", "svd"], default=None,
                   help="after --decompose-epoch epochs, factorise conv layers (Tucker-2, CP or SVD; linear layers "
                        "by SVD) and continue training the thinner model; with -s != 0 the factors are then "
                        "converted to shift layers (the first epochs train FP32)")
    g.add_argument("--decompose-epoch", dest="decompose_epoch", type=int, default=None, metavar="E",
                   help="epochs trained with the original architecture before decomposing (default 0)")
    g.add_argument("--rank", type=parse_rank, default="vbmf",
                   help="rank: int, fraction of the full rank (0.5), or vbmf (default: VBMF estimate)")
    g.add_argument("--recompose-epoch", dest="recompose_epoch", type=int, default=None, metavar="R",
                   help="after R epochs, multiply the factors back into the original layers (FP32 runs)")
    g.add_argument("--decompose-optimizer", dest="decompose_optimizer", choices=["reset", "carry"], default="reset",
                   help="at an architecture change: fresh optimizer state (reset, default) or keep the state of "
                        "parameters that survive (carry); the LR schedule continues either way")


# --------------------------------------------------------------------------------------------- experiment


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _integer_weights(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    types = shift_layer_types()
    out = {}
    for name, m in model.named_modules():
        if types and isinstance(m, types):
            shift, sign = m.integer_weights()
            out[name] = {"shift": shift.detach().cpu(), "sign": sign.detach().cpu()}
    return out


def _convert(model: nn.Module, config: Any) -> nn.Module:
    import shiftcomp

    filter_fn = None
    if type(config).__name__ in ("AdderConfig", "ShiftAddConfig"):
        # AdderNet and ShiftAddNet keep the first and the last Conv2d/Linear float
        from shiftcomp.convert import convertible_layers

        names = [n for n, _ in convertible_layers(model)]
        ends = {names[0], names[-1]} if names else set()
        filter_fn = lambda m, fqn: fqn not in ends  # noqa: E731
    out = shiftcomp.convert(model, config, filter_fn=filter_fn)
    return out if isinstance(out, nn.Module) else model


def run_experiment(args: argparse.Namespace, *, dataset: str, arch: str, build_model: Callable[[], nn.Module],
                   build_data: Callable[[argparse.Namespace], tuple[Dataset, Dataset]],
                   input_shape: Sequence[int] | None = None, default_schedule: str = "multistep",
                   argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run one experiment as described by ``args`` (from :func:`add_common_args`).

    Args:
        args: parsed flags.
        dataset: data set name for the folder (``mnist``, ``cifar10``, ``imagenet``).
        arch: architecture name for the folder.
        build_model: returns a fresh float model.
        build_data: returns ``(train_dataset, test_dataset)`` given ``args``.
        input_shape: per-sample input shape, for the summary only.
        default_schedule: LR schedule used when neither ``--lr-schedule`` nor ``--lr-step-size`` is given.
        argv: the command line, for ``command_args.txt`` (default ``sys.argv``).

    Returns:
        ``{"out_dir", "best_acc1", "final_acc1", "final_acc5", "epochs_run", "epoch", "sec_per_epoch"}``
        (and ``"exact_acc1"`` with ``--eval-exact``; ``"decompose_report"`` when this call decomposed).

    Raises:
        UsageError: inconsistent decomposition flags.
    """
    schedule = decompose_schedule_from_args(args)
    check_args(args, default_schedule)
    dist_info = setup_distributed()
    try:
        return _run(args, dist_info, schedule, dataset=dataset, arch=arch, build_model=build_model,
                    build_data=build_data, input_shape=input_shape, default_schedule=default_schedule, argv=argv)
    finally:
        if dist_info.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def check_args(args: argparse.Namespace, default_schedule: str = "multistep") -> None:
    """Everything about the flags that can be checked before any data is read or any epoch runs.

    Raises:
        UsageError: a config value out of range, a flag the layer type would ignore, a schedule missing its
            step size, or a ``--weights`` / ``--resume`` file that does not exist.
    """
    check_layer_flags(args)
    shift_config_from_args(args)
    kind = args.lr_schedule or ("step" if args.lr_step_size else default_schedule)
    if kind == "step" and not args.lr_step_size:
        raise UsageError("--lr-schedule step needs --lr-step-size N (decay the LR every N epochs)")
    if args.weights and not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights}: no such file (a state_dict or checkpoint saved by torch.save)")
    if args.resume not in (None, "auto") and not Path(args.resume).is_file():
        raise UsageError(f"--resume {args.resume}: no such checkpoint (or give --resume alone for the run "
                         f"folder's own checkpoint)")


def _load_file(flag: str, path: str | os.PathLike) -> Any:
    """``torch.load`` of a user-named file; a file that is not a PyTorch file is a :class:`UsageError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a truncated or foreign file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"{flag} {path}: not a readable PyTorch file ({type(e).__name__}: {first}); pass a "
                         f"state_dict or checkpoint saved by torch.save") from None


def run_main(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Call ``run()`` (a script's ``run_experiment`` call); a :class:`UsageError` becomes one line and exit 2."""
    try:
        return run()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


@dataclass
class _Run:
    """The state one experiment carries from epoch to epoch."""

    args: argparse.Namespace
    dist_info: DistInfo
    device: torch.device
    out_dir: Path
    config: Any                        # ShiftConfig | None
    schedule: DecomposeSchedule | None
    default_schedule: str
    model: nn.Module                   # unwrapped
    arch_state: dict[str, Any]         # what the module tree holds (recorded in checkpoints)
    net: nn.Module | None = None       # model, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    regularizer: Callable[[], torch.Tensor] | None = None
    log: Callable[..., None] = print

    def wire(self) -> None:
        """(Re)build the DDP wrapper, optimizer, schedule and regularizer for the current module tree."""
        self.model.to(self.device)
        self.optimizer = build_optimizer(self.model, self.args)
        self.scheduler = build_scheduler(self.optimizer, self.args, self.default_schedule)
        self.regularizer = ps_regularizer(self.model, self.args.wd)
        self.net = self.model
        if self.dist_info.enabled:
            dev = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=dev)


def _configure_threads(args: argparse.Namespace, dist_info: DistInfo) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    elif dist_info.enabled:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist_info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _read_resume_checkpoint(args: argparse.Namespace, out_dir: Path, log) -> tuple[dict | None, Path | None]:
    """The checkpoint ``--resume`` names (None for a fresh start)."""
    if not args.resume:
        return None, None
    path = out_dir / CHECKPOINT if args.resume == "auto" else Path(args.resume)
    if path.is_file():
        return _load_file("--resume", path), path
    if args.resume == "auto":
        log(f"=> no checkpoint in {out_dir}; starting from scratch")
        return None, path
    raise UsageError(f"--resume: no checkpoint at {path}")


def _checkpoint_architecture(ckpt: dict) -> dict[str, Any]:
    """What a checkpoint's module tree holds; checkpoints from before decomposition support are undecomposed,
    converted iff they record a shift config."""
    arch = ckpt.get("architecture")
    if arch is not None:
        return dict(arch)
    return {"decomposition": None, "decompose_config": None, "shift_converted": ckpt.get("shift_config") is not None,
            "recomposed": False}


def _build_model(args: argparse.Namespace, build_model: Callable[[], nn.Module], config: Any,
                 schedule: DecomposeSchedule | None, ckpt: dict | None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model and bring it to the architecture the run starts from: the checkpoint's when resuming,
    else ``--weights`` loaded and converted (conversion waits for the decomposition when one is scheduled)."""
    model = build_model()
    if ckpt is not None:
        arch = _checkpoint_architecture(ckpt)
        if arch["decomposition"]:
            from shiftcomp.decompose import apply_plan

            apply_plan(model, arch["decomposition"])
        if arch["shift_converted"]:
            if config is None:
                raise UsageError("--resume: the checkpoint holds a shift model but the flags describe FP32 (-s 0)")
            model = _convert(model, config)
        return model, arch
    arch = {"decomposition": None, "decompose_config": None, "shift_converted": False, "recomposed": False}
    weights_sd = None
    if args.weights:
        try:
            weights_sd = _strip_module_prefix(_extract_state_dict(_load_file("--weights", args.weights)))
        except TypeError as e:
            raise UsageError(f"--weights {args.weights}: {e}; pass a state_dict or a checkpoint holding one") from None
        if config is None or not _is_ps_state_dict(weights_sd):
            try:  # FP32 (or Q) weights: load into the float model, then convert
                model.load_state_dict(weights_sd)
                weights_sd = None
            except RuntimeError:
                if config is None or schedule is not None:
                    raise _weights_mismatch(args) from None
                # keep weights_sd otherwise: maybe weights of a converted model, loaded after convert
    if config is None:
        if args.activation_bits:
            warnings.warn("-ab is ignored for FP32 runs (-s 0)", stacklevel=3)
    elif schedule is None:
        model = _convert(model, config)
        arch["shift_converted"] = True
    if weights_sd is not None:  # weights of an already converted PS model
        try:
            model.load_state_dict(weights_sd)
        except RuntimeError:
            raise _weights_mismatch(args) from None
    return model, arch


def _weights_mismatch(args: argparse.Namespace) -> UsageError:
    return UsageError(f"--weights {args.weights}: its parameter names or shapes do not fit this model; pass the "
                      f"architecture (-a/--type) and the -s/-st/--layer-type flags it was trained with")


def _write_run_files(run: _Run, argv: Sequence[str] | None, input_shape: Sequence[int] | None) -> None:
    args, out_dir = run.args, run.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv))
    with open(out_dir / "command_args.txt", "a" if args.resume or args.evaluate else "w") as f:
        f.write(cmd + "\n\n" + json.dumps(vars(args), indent=2, default=str) + "\n")
    _write_summary(run, input_shape)
    if run.config is not None and hasattr(run.config, "to_json"):
        (out_dir / "shift_config.json").write_text(run.config.to_json() + "\n")


def _write_summary(run: _Run, input_shape: Sequence[int] | None) -> None:
    (run.out_dir / "model_summary.txt").write_text(_model_summary(run.model, run.config, input_shape))


@dataclass
class _Data:
    train_ds: Dataset
    test_ds: Dataset
    train_loader: DataLoader
    test_loader: DataLoader
    train_sampler: Any


def _build_loaders(args: argparse.Namespace, build_data, dist_info: DistInfo, device: torch.device) -> _Data:
    from shiftcomp.data import subset

    try:
        train_ds, test_ds = build_data(args)
    except FileNotFoundError as e:
        raise UsageError(f"--data {args.data}: {e}") from None
    train_ds = subset(train_ds, args.train_subset, seed=args.seed)
    test_ds = subset(test_ds, args.test_subset, seed=args.seed)
    batch = args.batch_size
    pin = device.type == "cuda"
    if dist_info.enabled:
        from torch.utils.data import Subset
        from torch.utils.data.distributed import DistributedSampler

        batch = max(1, args.batch_size // dist_info.world_size)
        sampler = DistributedSampler(train_ds, dist_info.world_size, dist_info.rank, shuffle=True, seed=args.seed)
        test_ds = Subset(test_ds, list(range(dist_info.rank, len(test_ds), dist_info.world_size)))
        train_loader = DataLoader(train_ds, batch, sampler=sampler, num_workers=args.workers, pin_memory=pin)
    else:
        sampler = None
        train_loader = DataLoader(train_ds, batch, shuffle=True, num_workers=args.workers, pin_memory=pin)
    test_loader = DataLoader(test_ds, args.test_batch_size, shuffle=False, num_workers=args.workers)
    return _Data(train_ds, test_ds, train_loader, test_loader, sampler)


def _restore(run: _Run, ckpt: dict | None, path: Path | None) -> tuple[int, float]:
    """Load ``ckpt`` (model, optimizer, schedule, RNG) into ``run``; ``(start_epoch, best_acc1)``."""
    if ckpt is None:
        return 0, 0.0
    run.model.load_state_dict(ckpt["state_dict"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scheduler is not None and ckpt.get("scheduler") is not None:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    start_epoch, best_acc1 = int(ckpt["epoch"]), float(ckpt["best_acc1"])
    if ckpt.get("rng") is not None:
        rng = ckpt["rng"]
        _set_rng_state(rng[run.dist_info.rank % len(rng)] if isinstance(rng, list) else rng)
    run.log(f"=> resumed {path} after epoch {start_epoch} (best acc1 {best_acc1:.2f}%)")
    return start_epoch, best_acc1


def _reset_logs(out_dir: Path, start_epoch: int) -> None:
    if start_epoch == 0:
        for name in (TRAIN_LOG, TEST_LOG):
            (out_dir / name).unlink(missing_ok=True)
    else:
        _truncate_csv(out_dir / TRAIN_LOG, start_epoch)
        _truncate_csv(out_dir / TEST_LOG, start_epoch)


def _evaluate_only(run: _Run, data: _Data, start_epoch: int, best_acc1: float, ckpt_path: Path | None,
                   progress: bool, result: dict[str, Any]) -> dict[str, Any]:
    args = run.args
    t0 = time.time()
    ev = evaluate(run.net, data.test_loader, device=run.device, progress=progress, dist_info=run.dist_info)
    run.log(f"test: loss {ev['loss']:.4f}  acc1 {ev['acc1']:.2f}%  acc5 {ev['acc5']:.2f}%")
    if run.dist_info.is_main:  # appended to eval_log.csv, so the training logs stay intact
        _append_csv(run.out_dir / EVAL_LOG, ["weights"] + TEST_FIELDS, {
            "weights": args.weights or (args.resume and str(ckpt_path)) or "init", "epoch": start_epoch,
            "test_loss": ev["loss"], "test_acc1": ev["acc1"], "test_acc5": ev["acc5"], "best_acc1": best_acc1,
            "time_s": round(time.time() - t0, 3)})
    result.update(final_acc1=ev["acc1"], final_acc5=ev["acc5"])
    _maybe_exact(args, run.net, data.test_loader, run.device, run.dist_info, result, run.log)
    return result


def _change_architecture(run: _Run, epoch: int, input_shape: Sequence[int] | None) -> dict[str, Any] | None:
    """Decompose (then convert) or recompose when ``epoch`` is the scheduled point; rewire the optimizer keeping
    the LR schedule's position. Returns the decomposition report rows when it decomposed."""
    s = run.schedule
    if s is None:
        return None
    rows = None
    recompose_due = s.recompose_epoch is not None and epoch >= s.recompose_epoch
    # ">=": a run resumed past the scheduled point (e.g. flags added later) still changes, at its first epoch
    original = not run.arch_state["decomposition"] and not run.arch_state["recomposed"]
    if epoch >= s.epoch and not recompose_due and original:
        import shiftcomp
        from shiftcomp.decompose import decomposition_plan

        report = shiftcomp.decompose(run.model, s.config)
        run.log(f"=> decomposed after epoch {epoch} ({s.config.method}, rank {s.config.rank}):\n{report}")
        rows = report.to_rows()
        run.arch_state.update(decomposition=decomposition_plan(run.model), decompose_config=s.config.to_dict())
        if run.config is not None:
            run.model = _convert(run.model, run.config)
            run.arch_state["shift_converted"] = True
    elif recompose_due and run.arch_state["decomposition"]:
        from shiftcomp.decompose import recompose

        recompose(run.model)
        run.arch_state.update(decomposition=None, recomposed=True)
        run.log(f"=> recomposed after epoch {epoch}")
    else:
        return None
    _rewire_optimizer(run)
    if run.dist_info.is_main:
        _write_summary(run, input_shape)
        if rows:
            _write_rows_with(run.out_dir / "decompose_report.csv", list(rows[0]), rows)
    return {"layers": rows} if rows else {}


def _rewire_optimizer(run: _Run) -> None:
    old_opt, old_sched = run.optimizer, run.scheduler
    lr = old_opt.param_groups[0]["lr"]
    initial = old_opt.param_groups[0].get("initial_lr", lr)
    run.wire()
    if run.schedule.carry_optimizer:
        for group in run.optimizer.param_groups:
            for p in group["params"]:
                if p in old_opt.state:
                    run.optimizer.state[p] = old_opt.state[p]
    if old_sched is not None and run.scheduler is not None:
        run.scheduler.load_state_dict(old_sched.state_dict())
    for group in run.optimizer.param_groups:
        group["lr"], group["initial_lr"] = lr, initial


def _arch_label(arch_state: dict[str, Any]) -> str:
    if arch_state["decomposition"]:
        return "decomposed"
    return "recomposed" if arch_state["recomposed"] else "original"


def _save_epoch(run: _Run, epoch: int, best_acc1: float, ev: dict[str, float], is_best: bool, dataset: str,
                arch: str) -> None:
    """Write the epoch's checkpoint (atomically; it records the module tree it holds) and the best copy."""
    rng: Any = _rng_state()
    if run.dist_info.enabled:
        import torch.distributed as dist

        rngs: list[Any] = [None] * run.dist_info.world_size
        dist.all_gather_object(rngs, rng)
        rng = rngs
    if not run.dist_info.is_main:
        return
    config = run.config if run.arch_state["shift_converted"] else None
    ckpt = {
        "epoch": epoch, "dataset": dataset, "arch": arch,
        "state_dict": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "best_acc1": best_acc1, "acc1": ev["acc1"], "rng": rng, "args": vars(run.args),
        "shift_config": config.to_dict() if config is not None and hasattr(config, "to_dict") else None,
        "architecture": dict(run.arch_state),
    }
    atomic_save(ckpt, run.out_dir / CHECKPOINT)
    if is_best:
        tmp = run.out_dir / f".{BEST}.tmp{os.getpid()}"
        shutil.copyfile(run.out_dir / CHECKPOINT, tmp)
        os.replace(tmp, run.out_dir / BEST)


def _train_epochs(run: _Run, data: _Data, start_epoch: int, best_acc1: float, progress: bool, dataset: str,
                  arch: str, input_shape: Sequence[int] | None, result: dict[str, Any]) -> tuple[dict | None, float]:
    """The epoch loop; returns the last evaluation (None if no epoch ran) and the best top-1."""
    args, log = run.args, run.log
    ev = None
    times: list[float] = []
    for epoch in range(start_epoch, args.epochs):
        t_start, cpu_start = time.time(), time.process_time()
        changed = _change_architecture(run, epoch, input_shape)
        if changed and changed.get("layers"):
            result["decompose_report"] = changed["layers"]
        if data.train_sampler is not None:
            data.train_sampler.set_epoch(epoch)
        lr = run.optimizer.param_groups[0]["lr"]
        t0 = time.time()
        tr = train_epoch(run.net, data.train_loader, run.optimizer, regularizer=run.regularizer, device=run.device,
                         progress=progress, desc=f"epoch {epoch + 1}/{args.epochs}")
        t_train = time.time() - t0
        if run.scheduler is not None:
            run.scheduler.step()
        t1 = time.time()
        ev = evaluate(run.net, data.test_loader, device=run.device, progress=progress, dist_info=run.dist_info)
        t_test = time.time() - t1
        t_epoch = time.time() - t_start
        cpu_epoch = time.process_time() - cpu_start
        times.append(t_train)
        is_best = ev["acc1"] > best_acc1
        best_acc1 = max(best_acc1, ev["acc1"])
        label = _arch_label(run.arch_state)
        log(f"epoch {epoch + 1}/{args.epochs}  lr {lr:.3g}  train loss {tr['loss']:.4f} acc1 {tr['acc1']:.2f}%  |  "
            f"test loss {ev['loss']:.4f} acc1 {ev['acc1']:.2f}% (best {best_acc1:.2f}%)  [{t_train:.1f}s + "
            f"{t_test:.1f}s, {label}]", flush=True)
        if run.dist_info.is_main:
            _append_csv(run.out_dir / TRAIN_LOG, TRAIN_FIELDS, {
                "epoch": epoch + 1, "lr": lr, "train_loss": tr["loss"], "train_acc1": tr["acc1"],
                "train_acc5": tr["acc5"], "time_s": round(t_train, 3), "epoch_time_s": round(t_epoch, 3),
                "arch": label, "cpu_time_s": round(cpu_epoch, 3)})
            _append_csv(run.out_dir / TEST_LOG, TEST_FIELDS, {
                "epoch": epoch + 1, "test_loss": ev["loss"], "test_acc1": ev["acc1"], "test_acc5": ev["acc5"],
                "best_acc1": best_acc1, "time_s": round(t_test, 3)})
        _save_epoch(run, epoch + 1, best_acc1, ev, is_best, dataset, arch)
        result["epochs_run"] += 1
        result["epoch"] = epoch + 1
    result["sec_per_epoch"] = (sum(times) / len(times)) if times else math.nan
    return ev, best_acc1


def _finish(run: _Run, data: _Data, ev: dict | None, best_acc1: float, progress: bool,
            result: dict[str, Any]) -> dict[str, Any]:
    if ev is None:  # nothing left to train (resumed a finished run): report the current model
        ev = evaluate(run.net, data.test_loader, device=run.device, progress=progress, dist_info=run.dist_info)
    if run.dist_info.is_main:
        atomic_save(run.model.state_dict(), run.out_dir / "weights.pth")
        if run.arch_state["shift_converted"]:
            atomic_save(_integer_weights(run.model), run.out_dir / "integer_weights.pth")
    result.update(best_acc1=best_acc1, final_acc1=ev["acc1"], final_acc5=ev["acc5"])
    _maybe_exact(run.args, run.net, data.test_loader, run.device, run.dist_info, result, run.log)
    if run.dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()  # no rank leaves (and tears down gloo) while rank 0 still writes
    run.log(f"=> done: final acc1 {result['final_acc1']:.2f}%, best {best_acc1:.2f}%, {run.out_dir}")
    return result


def _run(args: argparse.Namespace, dist_info: DistInfo, schedule: DecomposeSchedule | None, *, dataset: str,
         arch: str, build_model: Callable[[], nn.Module],
         build_data: Callable[[argparse.Namespace], tuple[Dataset, Dataset]], input_shape: Sequence[int] | None,
         default_schedule: str, argv: Sequence[str] | None) -> dict[str, Any]:
    _configure_threads(args, dist_info)
    device = torch.device("cuda", dist_info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    progress = progress_enabled(args, dist_info)
    log = print if dist_info.is_main else (lambda *a, **k: None)
    _seed_everything(args.seed)

    out_dir = Path(args.out_dir) / dataset / arch / run_dir_name(args)
    ckpt, ckpt_path = _read_resume_checkpoint(args, out_dir, log)
    config = shift_config_from_args(args)
    model, arch_state = _build_model(args, build_model, config, schedule, ckpt)
    run = _Run(args, dist_info, device, out_dir, config, schedule, default_schedule, model, arch_state, log=log)
    if dist_info.is_main:
        _write_run_files(run, argv, input_shape)
    data = _build_loaders(args, build_data, dist_info, device)
    run.wire()
    start_epoch, best_acc1 = _restore(run, ckpt, ckpt_path)
    if dist_info.is_main and not args.evaluate:
        _reset_logs(out_dir, start_epoch)

    n_test = len(data.test_ds) * dist_info.world_size if dist_info.enabled else len(data.test_ds)
    plan = "" if schedule is None else (f", {schedule.config.method} rank {schedule.config.rank} after epoch "
                                        f"{schedule.epoch}" + (f", recompose after {schedule.recompose_epoch}"
                                                               if schedule.recompose_epoch is not None else ""))
    log(f"=> {dataset}/{arch} -> {out_dir}  ({len(data.train_ds)} train / {n_test} test, opt {args.opt} lr "
        f"{args.lr}, {args.epochs} epochs, shift {config if config is not None else 'none (FP32)'}{plan})")

    result: dict[str, Any] = {"out_dir": str(out_dir), "best_acc1": best_acc1, "epoch": start_epoch, "epochs_run": 0}
    if args.evaluate:
        return _evaluate_only(run, data, start_epoch, best_acc1, ckpt_path, progress, result)
    ev, best_acc1 = _train_epochs(run, data, start_epoch, best_acc1, progress, dataset, arch, input_shape, result)
    return _finish(run, data, ev, best_acc1, progress, result)


def _maybe_exact(args, model, test_loader, device, dist_info, result, log) -> None:
    if not getattr(args, "eval_exact", False):
        return
    from shiftcomp.reference import exact

    with exact(_unwrap(model)):
        ev = evaluate(model, test_loader, device=device, dist_info=dist_info, desc="test (exact)")
    result["exact_acc1"] = ev["acc1"]
    log(f"exact integer reference: acc1 {ev['acc1']:.2f}%")
