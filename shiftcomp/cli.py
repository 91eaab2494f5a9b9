"""The ``shiftcomp`` command line: ``train | convert | compile | tune | bench | verify | demo``.

Each subcommand is a thin layer over the library (imports are lazy: TVM takes seconds to import).
Exit codes: 0 success, 1 a check failed (``verify`` not bit-exact), 2 bad input (message on stderr).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Sequence

from shiftcomp.errors import ShiftCompError

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
DATASETS = ("mnist", "cifar10", "imagenet")


def _experiment_main(name: str):
    """``main(argv)`` of ``experiments/<name>.py`` (source checkouts and editable installs only)."""
    script = EXPERIMENTS / f"{name}.py"
    if not script.is_file():
        raise SystemExit(f"shiftcomp: {script} not found: `shiftcomp train`/`bench` need the source checkout "
                         f"(pip install -e .)")
    spec = importlib.util.spec_from_file_location(f"shiftcomp_experiments_{name}", script)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod.main


def _example_input(shape: Sequence[int], batch: int):
    import torch

    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------- subcommands


def cmd_train(args: argparse.Namespace) -> int:
    _experiment_main(args.dataset)(args.rest)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    import shiftcomp as sc
    from shiftcomp.models import get_model
    from shiftcomp.training import atomic_save

    from shiftcomp.checkpoint_deepshift import deepshift_selection, load_float_weights

    model = get_model(args.arch, num_classes=args.num_classes)
    if args.weights:
        load_float_weights(model, args.weights, args.arch)
    config = sc.ShiftConfig(mode=args.mode, weight_bits=args.weight_bits,
                            act_bits=tuple(args.act_bits) if args.act_bits else None,
                            rounding=args.rounding, depth=args.depth, numerics=args.numerics)
    chosen = None
    if args.shift_depth is not None:  # DeepShift's -s N: counted from the end
        chosen = set(deepshift_selection(model, args.shift_depth))
    elif args.layers is not None:
        chosen = _layer_names(args.layers, model)
    sc.convert(model, config, filter_fn=None if chosen is None else (lambda m, fqn: fqn in chosen))
    atomic_save({"arch": args.arch, "dataset": None, "shift_config": config.to_dict(),
                 "shift_layers": [n for n, _ in sc.nn.named_shift_layers(model)],
                 "state_dict": model.state_dict(), "epoch": None, "acc1": None}, args.output)
    print(f"converted {args.arch} ({sum(1 for _ in sc.nn.shift_layers(model))} shift layers, {config}) -> {args.output}")
    return 0


def _layer_names(text: str, model) -> set[str]:
    """``--layers a,b``: names of Conv2d/Linear layers of ``model`` (ValueError naming unknown ones)."""
    from shiftcomp.convert import convertible_layers

    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [n for n, _ in convertible_layers(model)]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--layers: {', '.join(unknown)} not a Conv2d/Linear of the model (they are: "
                         f"{', '.join(known)})")
    return set(names)


def _import_options(args: argparse.Namespace):
    """The DeepShift-import flags of compile/verify as :class:`~shiftcomp.checkpoint_deepshift.ImportOptions`."""
    from shiftcomp.checkpoint_deepshift import ImportOptions

    return ImportOptions(arch=args.arch, mode=args.mode, weight_bits=args.weight_bits,
                         act_bits=tuple(args.act_bits) if args.act_bits else None, rounding=args.rounding,
                         numerics=args.numerics,
                         layers=tuple(n.strip() for n in args.layers.split(",")) if args.layers else None,
                         shift_depth=args.shift_depth, allow_float=args.allow_float)


def _load(args: argparse.Namespace):
    from shiftcomp.checkpoint import load_checkpoint
    from shiftcomp.nn import shift_layers

    ck = load_checkpoint(args.checkpoint, options=_import_options(args))
    if ck.summary:
        print(ck.summary)
    if not any(True for _ in shift_layers(ck.model)) and not args.allow_float:
        raise ValueError(f"{ck.path} gives a model with 0 shift layers (a float model): nothing would be "
                         f"checked; pass --allow-float to accept it, or --mode Q|PS to convert it")
    return ck


def _tuned(args: argparse.Namespace):
    """``--tuned`` as ``compile(tuned=...)`` takes it: "auto", None ("none") or a folder."""
    return None if args.tuned == "none" else args.tuned


def cmd_compile(args: argparse.Namespace) -> int:
    import shiftcomp as sc

    ck = _load(args)
    x = _example_input(ck.input_shape, args.batch)
    compiled = sc.compile(ck.model, (x,), target=args.target, tuned=_tuned(args))
    print(f"tuning database: {compiled.settings.database or 'none'} "
          f"({len(compiled.tuned_kernels)} kernels scheduled from it)")
    info = compiled.export(args.output)
    print(compiled)
    print(info)
    if args.audit:
        print(compiled.audit)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import shiftcomp as sc

    ck = _load(args)
    use_test = args.data == "test" or (args.data == "auto" and ck.dataset in (None, "mnist")
                                       and tuple(ck.input_shape) == (1, 28, 28))
    x = _test_batch(ck, args.batch) if use_test else _example_input(ck.input_shape, args.batch)
    compiled = sc.compile(ck.model, (x,), target=args.target, tuned=_tuned(args))
    report = sc.verify(compiled, ck.model, (x,))
    print(report)
    ok = bool(report.ok)
    if args.artifact:
        # An exported file carries no per-layer probes: it must reproduce the verified compile exactly.
        import torch

        import shiftcomp.artifact as sc_artifact

        same = torch.equal(sc.load(args.artifact)(x), compiled(x))  # ArtifactError -> exit 2 in main
        if not same:
            used = sc_artifact.read_manifest(args.artifact).get("tuning", {}).get("database")
            print(f"(this check compiled with --tuned {args.tuned}, database {compiled.settings.database}; the "
                  f"artifact was built with database {used}: pass the same --tuned)")
        print(f"artifact {args.artifact}: outputs {'identical to' if same else 'DIFFER from'} the verified compile")
        ok = ok and same
    return 0 if ok else 1


def _test_batch(ck, batch: int):
    """The first ``batch`` test images of the checkpoint's data set (MNIST-5k for MNIST models)."""
    if ck.dataset not in (None, "mnist") or tuple(ck.input_shape) != (1, 28, 28):
        raise ValueError("--data test is only bundled for MNIST models; use --data random")
    from shiftcomp.data import load_mnist

    _, test = load_mnist(None)
    return test.tensors[0][:batch]


def cmd_tune(args: argparse.Namespace) -> int:
    import shiftcomp as sc
    from shiftcomp.bench.cases import default_shift_config
    from shiftcomp.checkpoint import load_checkpoint
    from shiftcomp.models import INPUT_SHAPES, get_model
    from shiftcomp.tune import tune

    if Path(args.model).exists():
        ck = load_checkpoint(args.model, arch=args.arch)
        model, shape = ck.model, ck.input_shape
    elif args.model in INPUT_SHAPES:  # a zoo name: random weights, the benchmarks' shift configuration
        model, shape = sc.convert(get_model(args.model), default_shift_config()).eval(), INPUT_SHAPES[args.model]
    else:
        raise FileNotFoundError(f"{args.model!r} is neither a checkpoint nor a zoo model ({', '.join(INPUT_SHAPES)})")
    s = tune(model, (_example_input(shape, args.batch),), target=args.target, trials=args.trials,
             work_dir=args.work_dir, shapes=not args.no_shapes)
    if s.shapes:
        changed = [r for r in s.shapes if r["chosen"] != r["default"]]
        print(f"sum-then-shift shapes: {len(s.shapes)} layer shape(s) measured, {len(changed)} faster than the "
              f"default shape")
        for r in changed:
            print(f"  {r['key']}: {r['default_ms']:.4f} -> {r['chosen_ms']:.4f} ms {r['chosen']}")
    print(f"tuned {len(s.tasks)} task(s): {s.measured} candidates measured ({s.measured_on}) in {s.seconds:.0f} s "
          f"-> {s.work_dir}")
    print(f"compile with: shiftcomp compile CKPT -o model.so --target {args.target} --tuned "
          f"{'auto' if args.work_dir is None else s.work_dir}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    _experiment_main("bench_models" if args.what == "models" else "bench_layers")(args.rest)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from shiftcomp.demo import run_demo

    return 0 if run_demo(epochs=args.epochs, out_dir=Path(args.out_dir), mode=args.mode, seed=args.seed,
                         audit=args.audit).ok else 1


# ------------------------------------------------------------------------------------------------ parser


def _add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a training run folder or checkpoint file (records arch and ShiftConfig)")
    p.add_argument("--arch", default=None, help="zoo architecture, only for bare state_dict files")
    p.add_argument("--batch", type=int, default=1, help="batch size the model is compiled for (default 1)")
    p.add_argument("--target", default="llvm", help="llvm (this CPU) or cuda (default llvm)")
    g = p.add_argument_group("DeepShift files", "override what a DeepShift run folder / file says about itself")
    g.add_argument("--mode", choices=["Q", "PS"], default=None, help="shift mode (default: from the files)")
    g.add_argument("-wb", "--weight-bits", type=int, default=None, help="DeepShift's -wb (default: from the files)")
    g.add_argument("-ab", "--act-bits", type=int, nargs=2, metavar=("I", "F"), default=None,
                   help="DeepShift's -ab I F (default: from the files, else 16 16)")
    g.add_argument("--rounding", choices=["nearest", "floor"], default=None,
                   help="activation rounding (default floor, as DeepShift)")
    g.add_argument("--numerics", choices=["deepshift", "exact"], default=None,
                   help="deepshift (default for DeepShift files): the original's arithmetic; exact: shiftcomp's")
    g.add_argument("--layers", default=None, help="comma-separated names of the layers that are shift layers")
    g.add_argument("--shift-depth", type=int, default=None,
                   help="DeepShift's -s N: the last N layers are shift layers (every Linear too, except "
                        "for mnist --type linear)")
    p.add_argument("--allow-float", action="store_true", help="accept a model with no shift layer")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``shiftcomp`` command."""
    p = argparse.ArgumentParser(prog="shiftcomp", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("train", help="train (experiments/<dataset>.py; all its flags pass through)",
                       add_help=False)
    s.add_argument("dataset", choices=DATASETS)
    s.add_argument("rest", nargs=argparse.REMAINDER, help="flags for the training script (--help lists them)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("convert", help="convert a float zoo model (optionally with FP32 weights) to shift layers")
    s.add_argument("arch", help="zoo architecture, e.g. simple_conv, resnet20")
    s.add_argument("-o", "--output", required=True, help="checkpoint to write (.pth.tar)")
    s.add_argument("--weights", default=None, help="FP32 state_dict / checkpoint to start from")
    s.add_argument("--num-classes", type=int, default=10)
    s.add_argument("--mode", choices=["Q", "PS"], default="Q")
    s.add_argument("-wb", "--weight-bits", type=int, default=5)
    s.add_argument("-ab", "--act-bits", type=int, nargs=2, metavar=("I", "F"), default=None)
    s.add_argument("--rounding", choices=["nearest", "floor"], default="nearest")
    s.add_argument("--depth", type=int, default=None, help="convert only the first N Conv2d/Linear layers")
    s.add_argument("--shift-depth", type=int, default=None,
                   help="DeepShift's -s N: convert the last N layers (counted from the end, every Linear too)")
    s.add_argument("--layers", default=None, help="convert only these comma-separated layers")
    s.add_argument("--numerics", choices=["exact", "deepshift"], default="exact",
                   help="exact (default): shiftcomp's contract; deepshift: the original code's arithmetic")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("compile", help="compile a checkpoint to one deployable file")
    _add_checkpoint_args(s)
    s.add_argument("-o", "--output", required=True, help="artifact path (e.g. model.so)")
    s.add_argument("--tuned", default="auto",
                   help="MetaSchedule database folder; 'auto' (default): the shipped schedules/<target-key>/ "
                        "when present; 'none': built-in schedules only")
    s.add_argument("--audit", action="store_true", help="print the multiplication audit")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("verify", help="check compiled shift ops bit for bit against the integer reference")
    _add_checkpoint_args(s)
    s.add_argument("--artifact", default=None, help="also check that this exported file reproduces the verified compile exactly")
    s.add_argument("--tuned", default="auto",
                   help="as for compile (default auto); must match the artifact's compile for --artifact")
    s.add_argument("--data", choices=["auto", "test", "random"], default="auto",
                   help="inputs: the bundled MNIST-5k test images (MNIST models) or random; auto (default): "
                        "test for MNIST models, else random")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("tune", help="MetaSchedule-tune the shift kernels of a model; stores a database")
    s.add_argument("model", help="a checkpoint / run folder, or a zoo name (random weights)")
    s.add_argument("--arch", default=None)
    s.add_argument("--target", default="llvm")
    s.add_argument("--trials", type=int, default=64,
                   help="measured candidates in total, spread over the tasks (default 64)")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--work-dir", default=None, help="database folder (default schedules/<target-key>/)")
    s.add_argument("--no-shapes", action="store_true",
                   help="skip measuring the sum-then-shift kernels' shapes (lanes, block, input-channel tiles)")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("bench", help="benchmarks (experiments/bench_*.py; flags pass through)", add_help=False)
    s.add_argument("what", choices=["layers", "models"])
    s.add_argument("rest", nargs=argparse.REMAINDER, help="flags for the benchmark script (--help lists them)")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="train on bundled MNIST-5k -> compile -> verify -> export -> reload -> run")
    s.add_argument("--audit", action="store_true", help="also print the full multiplication audit")
    s.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    s.add_argument("--mode", choices=["Q", "PS"], default="Q")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out-dir", default="out/demo", help="where the checkpoint and artifact go (default out/demo)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shiftcomp`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if len(argv) == 2 and argv[0] in _PASS_THROUGH and argv[1] in ("-h", "--help"):
        # train/bench hand -h to the script they run, so their own help needs the script name first
        _subparser(parser, argv[0]).print_help()
        return 0
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as e:
        print(f"shiftcomp {args.command}: error: {e}; `shiftcomp tune` needs the tune extra "
              f"(pip install 'shiftcomp[tune]')", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - bad input becomes one line and exit 2; anything else propagates
        if not isinstance(e, _input_errors()):
            raise
        print(f"shiftcomp {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2


#: subcommands whose flags pass through to a script (``shiftcomp train mnist --help`` is the script's help)
_PASS_THROUGH = ("train", "bench")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _input_errors() -> tuple[type[BaseException], ...]:
    import pickle

    from shiftcomp.errors import ShiftCompError

    return (ShiftCompError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError, KeyError,
            EOFError, pickle.UnpicklingError)


def error_line(e: BaseException) -> str:
    """One line for a bad-input error: its message (a KeyError's without quotes), first line only."""
    from shiftcomp.errors import ShiftCompError

    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    lines = str(msg).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    if isinstance(e, (ValueError, KeyError, FileNotFoundError, ShiftCompError)):
        return text
    return f"{type(e).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
