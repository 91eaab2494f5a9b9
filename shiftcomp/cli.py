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

    model = get_model(args.arch, num_classes=args.num_classes)
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    config = sc.ShiftConfig(mode=args.mode, weight_bits=args.weight_bits,
                            act_bits=tuple(args.act_bits) if args.act_bits else None,
                            rounding=args.rounding, depth=args.depth)
    sc.convert(model, config)
    atomic_save({"arch": args.arch, "dataset": None, "shift_config": config.to_dict(),
                 "state_dict": model.state_dict(), "epoch": None, "acc1": None}, args.output)
    print(f"converted {args.arch} ({sum(1 for _ in sc.nn.shift_layers(model))} shift layers, {config}) -> {args.output}")
    return 0


def _tuned(args: argparse.Namespace):
    """``--tuned`` as ``compile(tuned=...)`` takes it: "auto", None ("none") or a folder."""
    return None if args.tuned == "none" else args.tuned


def cmd_compile(args: argparse.Namespace) -> int:
    import shiftcomp as sc
    from shiftcomp.checkpoint import load_checkpoint

    ck = load_checkpoint(args.checkpoint, arch=args.arch)
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
    from shiftcomp.checkpoint import load_checkpoint

    ck = load_checkpoint(args.checkpoint, arch=args.arch)
    x = _test_batch(ck, args.batch) if args.data == "test" else _example_input(ck.input_shape, args.batch)
    compiled = sc.compile(ck.model, (x,), target=args.target, tuned=_tuned(args))
    report = sc.verify(compiled, ck.model, (x,))
    print(report)
    ok = bool(report.ok)
    if args.artifact:
        # An exported file carries no per-layer probes: it must reproduce the verified compile exactly.
        import torch

        import shiftcomp.artifact as sc_artifact

        same = torch.equal(sc.load(args.artifact)(x), compiled(x))
        if not same:
            used = sc_artifact.read_manifest(args.artifact).get("tuning", {}).get("database")
            print(f"(this check compiled with --tuned {args.tuned}, database {compiled.settings.database}; the "
                  f"artifact was built with database {used}: pass the same --tuned)")
        print(f"artifact {args.artifact}: outputs {'identical to' if same else 'DIFFER from'} the verified compile")
        ok = ok and same
    return 0 if ok else 1


def _test_batch(ck, batch: int):
    """The first ``batch`` test images of the checkpoint's data set (MNIST-5k for MNIST models)."""
    if ck.dataset not in (None, "mnist"):
        raise SystemExit("shiftcomp: --data test is only bundled for MNIST; use --data random")
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
             work_dir=args.work_dir)
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
    s.add_argument("--data", choices=["test", "random"], default="test",
                   help="inputs: the bundled MNIST-5k test images (MNIST models) or random (default test)")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("tune", help="MetaSchedule-tune the shift kernels of a model; stores a database")
    s.add_argument("model", help="a checkpoint / run folder, or a zoo name (random weights)")
    s.add_argument("--arch", default=None)
    s.add_argument("--target", default="llvm")
    s.add_argument("--trials", type=int, default=64,
                   help="measured candidates in total, spread over the tasks (default 64)")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--work-dir", default=None, help="database folder (default schedules/<target-key>/)")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("bench", help="benchmarks (experiments/bench_*.py; flags pass through)", add_help=False)
    s.add_argument("what", choices=["layers", "models"])
    s.add_argument("rest", nargs=argparse.REMAINDER)
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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, ShiftCompError) as e:
        print(f"shiftcomp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"shiftcomp {args.command}: error: {e}; `shiftcomp tune` needs the tune extra "
              f"(pip install 'shiftcomp[tune]')", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
