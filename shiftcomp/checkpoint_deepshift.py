"""Importing the files the original DeepShift code writes, as it writes them.

A DeepShift run folder (``models/<dataset>/<arch>/shift_<q|ps>_<depth|all>[_wb_<b>][_<desc>]/``) holds
``command_args.txt``, ``weights.pth`` (the rounded ``state_dict``), ``model.pth`` (the whole pickled model, MNIST
and torchvision models only: the CIFAR ResNets' lambda shortcuts cannot be pickled) and, for CIFAR/ImageNet,
``checkpoint.pth.tar``/``model_best.pth.tar`` (``{"epoch", "arch", "state_dict" (DataParallel ``module.``
prefix, unrounded), "best_acc1", "optimizer", "lr_scheduler" (a pickled object)}``). Any of them, or the
folder, can be given; the folder's ``command_args.txt`` is read when present.

What the model is, in order of precedence: explicit :class:`ImportOptions` (the CLI flags) >
``command_args.txt`` > the layer classes and attributes pickled in ``model.pth`` > the tensors themselves
(``shift``/``sign`` parameters mean PS and say which layers were converted; Q layers hold plain ``weight``
tensors, recognised when every value is 0 or a power of two in the shift range). A file whose shift layers
cannot be told apart from float ones is refused with the flags that settle it, never built as a float model.

DeepShift's ``-s/--shift-depth N`` counts from the **end** of the model (it walks ``reversed(model._modules)``),
and its scripts convert every ``nn.Linear`` regardless of N except ``mnist.py --type linear``:
:func:`deepshift_selection` reproduces that on shiftcomp's zoo models.
"""
from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftcomp.checkpoint_pickle import (PickledObject, class_path, load_pickled, module_tree_layers,
                                         module_tree_state_dict, object_state)

__all__ = ["load_float_weights", "ImportOptions", "DeepShiftImport", "read_command_args", "deepshift_order", "deepshift_selection",
           "import_deepshift", "RUN_FILES", "is_deepshift_folder"]

#: the files of a DeepShift run folder, in the order the importer prefers them
RUN_FILES = ("weights.pth", "model_best.pth.tar", "checkpoint.pth.tar", "model.pth")

#: DeepShift architecture names -> shiftcomp zoo names, per data set
_ARCHS = {
    "mnist": {"linear": "simple_linear", "conv": "simple_conv"},
    "cifar10": {n: n for n in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18")},
    "imagenet": {"resnet18": "resnet18_imagenet", "resnet34": "resnet34_imagenet",
                 "resnet50": "resnet50_imagenet"},
}
#: top-level classes pickled in DeepShift's model.pth -> zoo names
_MODEL_CLASSES = {"LinearMNIST": "simple_linear", "ConvMNIST": "simple_conv"}
#: DeepShift layer classes -> mode
_LAYER_CLASSES = {"deepshift.modules_q.LinearShiftQ": "Q", "deepshift.modules_q.Conv2dShiftQ": "Q",
                  "deepshift.modules.LinearShift": "PS", "deepshift.modules.Conv2dShift": "PS"}
#: first key segment renames, DeepShift -> shiftcomp (DeepShift's CIFAR ResNets call the classifier "linear")
_RENAMES = (("linear.", "fc."),)


@dataclasses.dataclass
class ImportOptions:
    """Explicit choices that override what the files say (``None``: take it from the files).

    Attributes:
        arch: zoo architecture name.
        mode: ``"Q"`` or ``"PS"``.
        weight_bits: DeepShift's ``-wb``.
        act_bits: ``(I, F)``; DeepShift's ``-ab I F``.
        rounding: activation rounding (``"floor"`` reproduces DeepShift).
        numerics: ``"deepshift"`` (default for these files) or ``"exact"``.
        layers: names of the layers to treat as shift layers.
        shift_depth: DeepShift's ``-s N`` (counted from the end, see the module doc).
        allow_float: accept a model with no shift layer.
    """

    arch: str | None = None
    mode: str | None = None
    weight_bits: int | None = None
    act_bits: tuple[int, int] | None = None
    rounding: str | None = None
    numerics: str | None = None
    layers: tuple[str, ...] | None = None
    shift_depth: int | None = None
    allow_float: bool = False

    def given(self) -> list[str]:
        """Names of the fields that were set (for messages)."""
        return [f.name for f in dataclasses.fields(self)
                if f.name != "allow_float" and getattr(self, f.name) is not None]


@dataclasses.dataclass
class DeepShiftImport:
    """A DeepShift file turned into a shiftcomp model."""

    model: nn.Module
    arch: str
    dataset: str | None
    config: Any  # ShiftConfig | None (None: no shift layer)
    layers: tuple[str, ...]
    path: Path
    epoch: int | None
    acc1: float | None
    summary: str


def is_deepshift_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like a DeepShift run folder (``command_args.txt``, ``weights.pth`` or ``model.pth``)."""
    return any((folder / n).is_file() for n in ("command_args.txt", "weights.pth", "model.pth"))


def read_command_args(path: Path) -> dict[str, str]:
    """``command_args.txt`` (``name: value`` per line) as a dict of strings."""
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def _int_arg(args: dict[str, str], name: str) -> int | None:
    v = args.get(name)
    if v is None or v in ("", "None"):
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"command_args.txt: {name} is {v!r}, not an integer") from None


def _act_bits_arg(args: dict[str, str]) -> tuple[int, int] | None:
    i_bits, f_bits = _int_arg(args, "activation_integer_bits"), _int_arg(args, "activation_fraction_bits")
    if i_bits is not None and f_bits is not None:
        return (i_bits, f_bits)
    if "activation_bits" in args:
        try:
            v = [int(x) for x in ast.literal_eval(args["activation_bits"])]
        except (ValueError, SyntaxError, TypeError):
            raise ValueError(f"command_args.txt: activation_bits is {args['activation_bits']!r}") from None
        if len(v) == 2:
            return (v[0], v[1])
    return None


def _dataset_of(args: dict[str, str] | None, folder: Path) -> str | None:
    if args is not None:
        if "type" in args:
            return "mnist"
        if "data" in args:
            return "imagenet"
        if "arch" in args:
            return "cifar10"
    parts = [p.lower() for p in folder.parts]
    for ds in ("mnist", "cifar10", "imagenet"):
        if ds in parts:
            return ds
    return None


def _arch_from_args(args: dict[str, str], dataset: str | None) -> str | None:
    name = args.get("type") if dataset == "mnist" else args.get("arch")
    if not name:
        return None
    table = _ARCHS.get(dataset or "", {})
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ValueError(f"DeepShift architecture {name!r} ({dataset}) has no shiftcomp model (known: {known}); "
                         f"pass --arch with a zoo model of the same layout")
    return table[name]


# --------------------------------------------------------------------------------------------- state dicts
def _normalise_keys(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Tensors only, with DataParallel's ``module.`` segments removed."""
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = k.removeprefix("module.").replace(".module.", ".")
        out[k] = v
    return out


def _layer_of(key: str) -> tuple[str, str]:
    fqn, _, leaf = key.rpartition(".")
    return fqn, leaf


def _rename_to(state: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Apply DeepShift -> shiftcomp renames where the target model has the new name but not the old."""
    out = {}
    for k, v in state.items():
        if k not in target_keys:
            for old, new in _RENAMES:
                if k.startswith(old) and _fold(new + k[len(old):]) in target_keys:
                    k = new + k[len(old):]
                    break
        out[k] = v
    return out


def _fold(key: str) -> str:
    """A PS layer's ``shift``/``sign`` key as the float model's ``weight`` key."""
    fqn, leaf = _layer_of(key)
    return f"{fqn}.weight" if leaf in ("shift", "sign") else key


def _signature(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """key -> shape with PS ``shift``/``sign`` folded to ``weight`` (the float model's keys)."""
    sig = {}
    for k, v in state.items():
        fqn, leaf = _layer_of(k)
        if leaf in ("shift", "sign"):
            k = f"{fqn}.weight"
        sig[k] = tuple(v.shape)
    return sig


def _num_classes(sig: dict[str, tuple[int, ...]]) -> int:
    for k in reversed(list(sig)):
        if k.endswith(".weight") and len(sig[k]) == 2:
            return int(sig[k][0])
    return 10


def _meta_model(arch: str, num_classes: int) -> nn.Module:
    from shiftcomp.models import get_model

    with torch.device("meta"):
        return get_model(arch, num_classes=num_classes)


def _match_arch(sig: dict[str, tuple[int, ...]]) -> str | None:
    """The zoo model whose float ``state_dict`` has exactly these keys and shapes (after renames)."""
    from shiftcomp.models import MODELS

    n = _num_classes(sig)
    for arch in MODELS:
        ref = {k: tuple(v.shape) for k, v in _meta_model(arch, n).state_dict().items()}
        renamed = _signature(_rename_to({k: torch.empty(0) for k in sig}, set(ref)))
        mapped = {rk: sig[k] for rk, k in zip(renamed, sig)}
        if mapped == ref:
            return arch
    return None


def _describe_mismatch(sig: dict[str, tuple[int, ...]], model: nn.Module, arch: str) -> str:
    ref = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    renamed = _rename_to({k: torch.empty(0) for k in sig}, set(ref))
    mapped = {rk: sig[k] for rk, k in zip(renamed, sig)}
    missing = [k for k in ref if k not in mapped]
    unexpected = [k for k in mapped if k not in ref]
    shapes = [f"{k} {mapped[k]} vs {ref[k]}" for k in ref if k in mapped and mapped[k] != ref[k]]
    parts = []
    if missing:
        parts.append(f"missing {missing[:3]}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:3]}")
    if shapes:
        parts.append(f"shape {shapes[:2]}")
    return f"the tensors do not fit {arch} ({'; '.join(parts)})"


# --------------------------------------------------------------------------------------------- layer sets
def deepshift_order(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(fqn, layer)`` of the ``nn.Conv2d``/``nn.Linear`` layers in the order DeepShift's conversion visits
    them: ``reversed(_modules)`` at every level, children before their parent."""
    out: list[tuple[str, nn.Module]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in reversed(list(module._modules.items())):
            if child is None:
                continue
            if len(list(child.children())) > 0:
                visit(child, f"{prefix}{name}.")
            if type(child) in (nn.Linear, nn.Conv2d):
                out.append((f"{prefix}{name}", child))

    visit(model, "")
    return out


def deepshift_selection(model: nn.Module, shift_depth: int, convert_all_linear: bool = True) -> list[str]:
    """The layers DeepShift's ``convert_to_shift(model, shift_depth, convert_all_linear=...)`` converts, in
    module order (``shift_depth`` counts from the end; with ``convert_all_linear`` every Linear is converted
    and only convolutions are counted)."""
    count, chosen = 0, set()
    for fqn, m in deepshift_order(model):
        if isinstance(m, nn.Linear) and (convert_all_linear or count < shift_depth):
            chosen.add(fqn)
            if not convert_all_linear:
                count += 1
        if isinstance(m, nn.Conv2d) and count < shift_depth:
            chosen.add(fqn)
            count += 1
    return [fqn for fqn, m in model.named_modules() if fqn in chosen]


def _pow2_layers(state: dict[str, torch.Tensor], names: list[str]) -> tuple[list[str], int]:
    """Layers (of ``names``) whose ``weight`` is all zeros and powers of two ``2**k``, ``-127 <= k <= 0``; and
    the largest ``-k`` seen."""
    found, deepest = [], 0
    for fqn in names:
        w = state.get(f"{fqn}.weight")
        if w is None or not w.is_floating_point() or w.numel() == 0:
            continue
        a = w.detach().abs().double()
        nz = a[a != 0]
        if nz.numel() == 0:
            continue
        k = torch.log2(nz)
        if bool((k == torch.round(k)).all()) and bool((k <= 0).all()) and bool((k >= -127).all()):
            found.append(fqn)
            deepest = max(deepest, int(-k.min()))
    return found, deepest


def _deepest_ps_shift(state: dict[str, torch.Tensor], layers: list[str]) -> int:
    """``-min(round(shift))`` over the PS weights whose sign rounds to nonzero (zero weights carry any shift)."""
    deepest = 0
    for n in layers:
        shift, sign = state.get(f"{n}.shift"), state.get(f"{n}.sign")
        if shift is None or sign is None:
            continue
        live = shift[torch.sign(torch.round(sign)) != 0]
        if live.numel():
            deepest = max(deepest, int(-live.clamp(min=-127).round().min().item()))
    return deepest


def _bits_for(mode: str, deepest: int) -> int:
    """The smallest DeepShift ``-wb`` (at least its default 5) whose range reaches shift ``-deepest``."""
    for b in range(5, 9):
        lo = 2 ** (b - 1) - (1 if mode == "Q" else 2)
        if deepest <= lo:
            return b
    return 8


def _bits_from_range(mode: str, lo: int) -> int:
    return int(round(math.log2(-lo + (1 if mode == "Q" else 2)))) + 1


# --------------------------------------------------------------------------------------------- loading
def _load_file(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State and facts of one DeepShift file (``facts``: model.pth layer classes/attributes, epoch, acc1)."""
    try:
        obj = load_pickled(file)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for foreign or broken files
        raise ValueError(f"{file} is not a PyTorch checkpoint or is truncated ({type(e).__name__}: {str(e)[:120]}); "
                         f"check the file is complete (not truncated)") from None
    facts: dict[str, Any] = {}
    if isinstance(obj, nn.Module):  # a pickled model whose classes are all importable torch ones
        return _normalise_keys(obj.state_dict()), facts
    if isinstance(obj, PickledObject):
        st = object_state(obj)
        if "_modules" not in st:
            raise ValueError(f"{file} holds a pickled {class_path(obj)}, not a model or state_dict")
        facts["model_class"] = class_path(obj)
        facts["classes"] = sorted({class_path(o) for _, o in module_tree_layers(obj)})
        facts["layers"] = {fqn: (class_path(o), object_state(o)) for fqn, o in module_tree_layers(obj)
                           if class_path(o) in _LAYER_CLASSES}
        return _normalise_keys(module_tree_state_dict(obj)), facts
    if not isinstance(obj, dict):
        raise ValueError(f"{file} holds a {type(obj).__name__}, not a state_dict or checkpoint")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        facts["epoch"] = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
        acc = obj.get("best_acc1")
        facts["acc1"] = float(acc) if isinstance(acc, (int, float, torch.Tensor)) and torch.as_tensor(acc).numel() == 1 else None
        if isinstance(obj.get("arch"), str):
            facts["arch"] = obj["arch"]
        obj = obj["state_dict"]
    state = _normalise_keys(obj)
    if not state:
        raise ValueError(f"{file} holds no tensors: it is not a state_dict or checkpoint")
    return state, facts


def _pick_file(path: Path) -> Path:
    if path.is_dir():
        for name in RUN_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds none of {', '.join(RUN_FILES)}: give a DeepShift run folder or "
                                f"one of its files")
    if not path.is_file():
        raise FileNotFoundError(f"no file or folder at {path}")
    return path


def import_deepshift(path: str | Path, options: ImportOptions | None = None) -> DeepShiftImport:
    """Build the shiftcomp model of a DeepShift run folder or file (see the module doc).

    Raises:
        FileNotFoundError: nothing to read; ValueError: one line naming the problem and the flag that fixes it.
    """
    from shiftcomp.config import ShiftConfig
    from shiftcomp.convert import convert
    from shiftcomp.models import MODELS, get_model

    opt = options or ImportOptions()
    file = _pick_file(Path(path))
    folder = file.parent
    args = read_command_args(folder / "command_args.txt") if (folder / "command_args.txt").is_file() else None
    state, facts = _load_file(file)
    dataset = _dataset_of(args, folder)
    notes: list[str] = [f"{file.name}" + (" + command_args.txt" if args is not None else "")]

    # ---- architecture
    sig = _signature(state)
    arch = opt.arch
    if arch is None and args is not None:
        arch = _arch_from_args(args, dataset)
    if arch is None and facts.get("model_class", "").rpartition(".")[2] in _MODEL_CLASSES:
        arch = _MODEL_CLASSES[facts["model_class"].rpartition(".")[2]]
    if arch is None and "arch" in facts and dataset in _ARCHS:
        arch = _ARCHS[dataset].get(facts["arch"])
    if arch is None:
        arch = _match_arch(sig)
    if arch is None:
        extra = ""
        if "model_class" in facts:
            unknown = [c for c in facts["classes"] if not c.startswith("torch.") and c not in _LAYER_CLASSES]
            extra = (f" {file.name} pickles classes shiftcomp has no model for ({', '.join(unknown[:4])});")
        raise ValueError(f"{file}: cannot tell the architecture.{extra} pass --arch NAME (one of "
                         f"{', '.join(sorted(MODELS))}) or keep DeepShift's command_args.txt beside the file")
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(MODELS))}")
    num_classes = _num_classes(sig)
    probe = _meta_model(arch, num_classes)
    target_keys = set(probe.state_dict())
    state = _rename_to(state, target_keys)
    sig = _signature(state)
    if sig != {k: tuple(v.shape) for k, v in probe.state_dict().items()}:
        raise ValueError(f"{file}: {_describe_mismatch(_signature(state), probe, arch)}; pass the matching "
                         f"--arch (ImageNet ResNets are resnet18_imagenet/resnet34_imagenet/resnet50_imagenet)")
    names = [fqn for fqn, m in probe.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]

    # ---- mode and converted layers
    ps_layers = [fqn for fqn in names if f"{fqn}.shift" in state]
    file_mode = "PS" if ps_layers else None
    class_modes = {fqn: _LAYER_CLASSES[c] for fqn, (c, _) in facts.get("layers", {}).items()}
    if class_modes:
        file_mode = sorted(set(class_modes.values()))[0]
    args_mode = args.get("shift_type") if args is not None else None
    args_depth = _int_arg(args, "shift_depth") if args is not None else None
    convert_all_linear = not (dataset == "mnist" and args is not None and args.get("type") == "linear")
    if args is None and arch == "simple_linear":
        convert_all_linear = False

    mode = opt.mode or file_mode or (args_mode if args_depth else None)
    if opt.mode and file_mode == "PS" and opt.mode != "PS":
        raise ValueError(f"{file} holds PS parameters (shift/sign); --mode {opt.mode} cannot read them: "
                         f"drop --mode or pass --mode PS")
    if opt.layers is not None:
        unknown = [n for n in opt.layers if n not in names]
        if unknown:
            raise ValueError(f"--layers: {', '.join(unknown)} not a Conv2d/Linear of {arch} (they are: "
                             f"{', '.join(names)})")
        layers = [n for n in names if n in opt.layers]
        how = "--layers"
    elif opt.shift_depth is not None:
        layers = deepshift_selection(probe, opt.shift_depth, convert_all_linear)
        how = f"--shift-depth {opt.shift_depth} (from the end)"
    elif ps_layers:
        layers, how = ps_layers, "its shift/sign parameters"
    elif class_modes:
        layers, how = [n for n in names if n in class_modes], "the layer classes in model.pth"
    elif args_depth is not None:
        layers = deepshift_selection(probe, args_depth, convert_all_linear) if args_depth > 0 else []
        how = f"command_args.txt (shift_depth {args_depth}, counted from the end)"
    elif opt.mode is not None:
        layers, how = list(names), f"--mode {opt.mode} (every layer)"
    else:
        layers, deepest = _pow2_layers(state, names)
        how = "power-of-two weights"
        if layers and mode is None:
            mode = "Q"
    if layers and mode is None:
        if opt.layers is None and opt.shift_depth is None:
            raise ValueError(f"{file}: cannot tell the shift mode; pass --mode Q or --mode PS")
        mode = "Q"
    if ps_layers and set(ps_layers) != set(layers):
        raise ValueError(f"{file}: PS parameters are in {ps_layers[:3]}..., but the layer selection ({how}) "
                         f"gives {layers[:3]}...; drop --layers/--shift-depth")
    if not layers and not opt.allow_float:
        if args_depth == 0:
            what = "a float model (command_args.txt: shift_depth 0); pass --mode Q|PS with --shift-depth N or --layers"
        elif "epoch" in facts:
            what = ("neither shift/sign parameters nor power-of-two weights (a DeepShift-Q checkpoint is saved "
                    "unrounded): keep its command_args.txt beside it or pass --mode Q with -wb/-ab/--shift-depth "
                    "as trained")
        else:
            what = ("no shift layer: no shift/sign parameters and no power-of-two weights; pass --mode Q|PS "
                    "(with --shift-depth N or --layers) to convert it")
        raise ValueError(f"{file}: {what}, or --allow-float to use it as a float model")

    # ---- numeric format
    config = None
    if layers:
        attrs = next(iter(facts.get("layers", {}).values()), (None, {}))[1]
        wb = opt.weight_bits or (_int_arg(args, "weight_bits") if args is not None else None)
        if wb is None and attrs.get("shift_range") is not None:
            wb = _bits_from_range(mode, int(attrs["shift_range"][0]))
        if wb is None:
            _, deepest = _pow2_layers(state, layers) if mode == "Q" else (None, _deepest_ps_shift(state, layers))
            wb = _bits_for(mode, deepest)
        act = opt.act_bits or (_act_bits_arg(args) if args is not None else None)
        if act is None and "act_integer_bits" in attrs:
            act = (int(attrs["act_integer_bits"]), int(attrs["act_fraction_bits"]))
        if act is None:
            act = (16, 16)
            notes.append("activations Q(16,16) (DeepShift's default; pass -ab I F if the run used others)")
        config = ShiftConfig(mode=mode, weight_bits=wb, act_bits=tuple(act), rounding=opt.rounding or "floor",
                             numerics=opt.numerics or "deepshift")

    # ---- build
    model = get_model(arch, num_classes=num_classes)
    if layers:
        chosen = set(layers)
        convert(model, config, filter_fn=lambda m, fqn: fqn in chosen)
        if mode == "PS":  # plain weights given for PS layers: DeepShift's get_shift_and_sign
            for fqn in layers:
                w = state.pop(f"{fqn}.weight", None)
                if w is not None:
                    state[f"{fqn}.shift"] = torch.round(torch.log2(w.abs()))
                    state[f"{fqn}.sign"] = torch.sign(w)
    state = {k: (v.clamp(min=-128.0) if k.endswith(".shift") else v) for k, v in state.items()}  # -inf at sign 0
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{file} does not fit {arch} with shift layers {layers[:4]}: missing {list(missing)[:4]}, "
                         f"unexpected {list(unexpected)[:4]}")
    model.eval()
    summary = (f"DeepShift {dataset or 'run'} -> {arch}: "
               + (f"{mode}, -wb {config.weight_bits}, -ab {config.act_bits[0]} {config.act_bits[1]}, rounding "
                  f"{config.rounding}, numerics {config.numerics}, {len(layers)}/{len(names)} shift layers "
                  f"(from {how})" if config else "float model (--allow-float)")
               + f"; read {', '.join(notes)}")
    return DeepShiftImport(model=model, arch=arch, dataset=dataset, config=config, layers=tuple(layers),
                           path=file, epoch=facts.get("epoch"), acc1=facts.get("acc1"), summary=summary)


def load_float_weights(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load float weights (a state_dict, checkpoint or pickled model, DeepShift's or torchvision's) into the float
    zoo ``model`` in place, for ``shiftcomp convert --weights``.

    Raises ValueError with the fix when the file holds shift parameters (it is a shift model already: compile
    or verify it directly) or its tensors do not fit ``arch``.
    """
    file = _pick_file(Path(path))
    beside = file.parent / "command_args.txt"
    if beside.is_file():
        args = read_command_args(beside)
        depth = _int_arg(args, "shift_depth") if "shift_type" in args else None
        if depth:
            raise ValueError(f"{file} is from a DeepShift {args.get('shift_type')} run (command_args.txt: shift_depth "
                             f"{depth}), a shift model already: compile or verify it directly (shiftcomp compile "
                             f"{file.parent} -o model.so); its -s counts from the end, --shift-depth N here too")
    state, _ = _load_file(file)
    ps = sorted({_layer_of(k)[0] for k in state if _layer_of(k)[1] in ("shift", "sign")})
    if ps:
        raise ValueError(f"{file} holds shift parameters (DeepShift-PS: {ps[0]}.shift ...), it is a shift model "
                         f"already: compile or verify it directly (shiftcomp compile {file} -o model.so)")
    state = _rename_to(state, set(model.state_dict()))
    sig = _signature(state)
    if sig != {k: tuple(v.shape) for k, v in model.state_dict().items()}:
        hint = ""
        guess = _match_arch(sig)
        if guess is not None and guess != arch:
            hint = f"; it fits {guess}: pass that architecture"
        elif "fc.weight" in sig and any(k.startswith("layer4.") for k in sig) and "imagenet" not in arch:
            hint = "; a torchvision ResNet needs resnet18_imagenet/resnet34_imagenet/resnet50_imagenet"
        raise ValueError(f"{file}: {_describe_mismatch(sig, model, arch)}{hint}")
    model.load_state_dict(state)
