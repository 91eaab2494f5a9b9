"""The deployable artifact: export -> load in a fresh process -> identical outputs; size; bad files."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from shiftcomp.artifact import MAGIC, file_sha256, load, read_manifest
from shiftcomp.compiler import compile
from shiftcomp.config import ShiftConfig
from shiftcomp.errors import ArtifactError
from shiftcomp.nn import Conv2dShift, LinearShift
from shiftcomp.reference import exact

REPO = Path(__file__).resolve().parents[2]


class Net(nn.Module):
    def __init__(self, cfg: ShiftConfig) -> None:
        super().__init__()
        self.conv1 = Conv2dShift(3, 16, 3, padding=1, config=cfg)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = Conv2dShift(16, 16, 3, padding=1, groups=4, bias=False, config=cfg)
        self.fc = LinearShift(16 * 4 * 4, 10, config=cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = nn.functional.max_pool2d(torch.relu(self.conv2(y)), 2)
        return self.fc(torch.flatten(y, 1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = Net(ShiftConfig(mode="Q", weight_bits=5, act_bits=(4, 6))).eval()
    x = torch.randn(2, 3, 8, 8)
    cm = compile(model, x)
    path = tmp_path_factory.mktemp("art") / "model.so"
    info = cm.export(path)
    return cm, x, path, info


def _fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=str(REPO), env={**os.environ, **(env or {})}, timeout=300)


def test_export_load_fresh_process_identical(exported, tmp_path) -> None:
    cm, x, path, _ = exported
    torch.save(x, tmp_path / "x.pt")
    r = _fresh(f"""
        import torch, shiftcomp.artifact as A
        m = A.load({str(path)!r})
        torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
        print(m)
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "y.pt"), cm(x))


def test_load_in_process_and_manifest(exported) -> None:
    cm, x, path, info = exported
    m = load(path)
    assert torch.equal(m(x), cm(x))
    man = read_manifest(path)
    assert man["format"] == "shiftcomp-artifact" and man["inputs"] == [{"shape": [2, 3, 8, 8], "dtype": "float32"}]
    assert list(dict.fromkeys(w["layer"] for w in man["weights"])) == ["conv1", "conv2", "fc"]
    assert path.read_bytes()[:8] == MAGIC and info.file_bytes == path.stat().st_size


def test_weight_bytes_at_most_a_sixth_of_float32(exported) -> None:
    cm, x, path, info = exported
    assert set(info.bits.values()) == {5}
    n = sum(p.numel() for name, p in cm.imported.graph_module.named_parameters() if name.endswith("weight")
            and "bn" not in name)
    assert info.float32_weight_bytes == 4 * n
    assert info.packed_weight_bytes <= info.float32_weight_bytes / 6, info
    print(f"packed {info.packed_weight_bytes} B vs float32 {info.float32_weight_bytes} B "
          f"(ratio {info.weight_ratio:.4f}); file {info.file_bytes} B, library {info.lib_bytes} B")


def test_truncated_file_is_a_clear_error(exported, tmp_path) -> None:
    _, _, path, _ = exported
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 30, 12):
        bad = tmp_path / f"cut{cut}.so"
        bad.write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match="truncated"):
            load(bad)


def test_foreign_and_corrupted_files(exported, tmp_path) -> None:
    cm, _, path, _ = exported
    elf = tmp_path / "plain.so"
    cm.executable.export_library(str(elf))  # a real shared library, but not an artifact
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for f in (elf, text):
        with pytest.raises(ArtifactError, match="not a shiftcomp artifact"):
            load(f)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.so"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load(bad)
    with pytest.raises(ArtifactError, match="no such"):
        load(tmp_path / "missing.so")


def test_load_with_runtime_only_tvm(exported, tmp_path) -> None:
    """TVM_USE_RUNTIME_LIB=1: only libtvm_runtime.so is loaded (no compiler library)."""
    cm, x, path, _ = exported
    torch.save(x, tmp_path / "x.pt")
    r = _fresh(f"""
        import torch, shiftcomp.artifact as A
        import tvm.base
        m = A.load({str(path)!r})
        torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
        print("runtime_only", tvm.base._RUNTIME_ONLY)
    """, env={"TVM_USE_RUNTIME_LIB": "1"})
    if r.returncode != 0 and "RegisterOpAttr" in r.stderr:
        pytest.skip("something imported tvm.relax at `import shiftcomp` (keep compile/verify lazy in __init__)")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "runtime_only True" in r.stdout
    assert torch.equal(torch.load(tmp_path / "y.pt"), cm(x))


#: TVM packages that need the compiler library (their imports fail or register ops with a runtime-only TVM)
COMPILER_PACKAGES = ("tvm.te", "tvm.tirx", "tvm.relax", "tvm.s_tir", "tvm.script", "tvm.topi", "tvm.meta_schedule",
                     "tvm.dlight", "tvm.driver")


class AllShiftKernels(nn.Module):
    """One layer per derived-input kernel family: sum-then-shift conv and depthwise conv, sum-then-shift dense
    over the batch (2 rows), and a batch-1 dense (the table GEMV kernel) over both rows flattened."""

    def __init__(self, cfg: ShiftConfig) -> None:
        super().__init__()
        self.conv = Conv2dShift(3, 8, 3, padding=1, config=cfg)
        self.dw = Conv2dShift(8, 8, 3, padding=1, groups=8, config=cfg)
        self.fc = LinearShift(8 * 4 * 4, 12, config=cfg)
        self.head = LinearShift(2 * 12, 5, config=cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.dw(torch.relu(self.conv(x))))
        y = torch.relu(self.fc(torch.flatten(nn.functional.max_pool2d(y, 2), 1)))
        return self.head(y.reshape(1, -1))


def test_shift_kernel_inputs_load_with_runtime_only_tvm(tmp_path) -> None:
    """The sum-then-shift and table GEMV inputs are rebuilt by numpy-only derivations: with only
    libtvm_runtime (TVM_USE_RUNTIME_LIB=1) the artifact loads bit-identical to the compiled model, and
    ``import shiftcomp`` + load import no compiler package of TVM and no kernel-building module of ours.
    (``import tvm`` itself imports ``tvm.te`` and ``tvm.tirx`` even runtime-only, so only the modules imported
    after it are checked.)"""
    from passes.sum_then_shift_plan import PLAN_INPUT
    from passes.table_gemv_inputs import TABLE_INPUT

    torch.manual_seed(4)
    model = AllShiftKernels(ShiftConfig(mode="Q", weight_bits=5, act_bits=(3, 5))).eval()
    x = torch.randn(2, 3, 8, 8)
    cm = compile(model, x)
    kernels = {name: cm.layers[name].task_name for name in ("conv", "dw", "fc", "head")}
    assert kernels["conv"].startswith("sum_then_shift_conv2d_"), kernels
    assert kernels["dw"].startswith("sum_then_shift_depthwise_"), kernels
    assert kernels["fc"].startswith("sum_then_shift_dense_2x"), kernels
    assert kernels["head"].startswith("table_gemv_dense_1x24to5"), kernels
    path = tmp_path / "all.so"
    cm.export(path)
    derived = {(w["layer"], w["derive"]["fn"], w["derive"]["module"]) for w in read_manifest(path)["weights"]
               if "derive" in w}
    assert {(layer, fn) for layer, fn, _ in derived} == {("conv", PLAN_INPUT), ("dw", PLAN_INPUT),
                                                         ("fc", PLAN_INPUT), ("head", TABLE_INPUT)}
    assert {module for _, _, module in derived} == {"passes.sum_then_shift_plan", "passes.table_gemv_inputs"}
    torch.save(x, tmp_path / "x.pt")
    r = _fresh(f"""
        import sys, torch, tvm
        import tvm.base
        before = set(sys.modules)
        import shiftcomp
        m = shiftcomp.load({str(path)!r})
        torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
        print("runtime_only", tvm.base._RUNTIME_ONLY)
        print("imported", sorted(set(sys.modules) - before))
    """, env={"TVM_USE_RUNTIME_LIB": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "runtime_only True" in r.stdout
    imported = eval(r.stdout.split("imported ", 1)[1])
    compiler = [m for m in imported if ".".join(m.split(".")[:2]) in COMPILER_PACKAGES]
    assert compiler == [], compiler
    builders = [m for m in imported if m in ("schedules.sum_then_shift", "schedules.table_gemv", "passes.kernels",
                                            "passes.sum_then_shift_family", "passes.table_gemv_family")]
    assert builders == [], builders
    assert torch.equal(torch.load(tmp_path / "y.pt"), cm(x))
    with exact(model):
        assert torch.equal(cm(x), model(x))


# ---------------------------------------------------------------------------------------------- trust
def test_expected_sha256_refuses_any_other_file(exported, tmp_path) -> None:
    cm, x, path, _ = exported
    digest = file_sha256(path)
    assert torch.equal(load(path, expected_sha256=digest)(x), cm(x))
    assert torch.equal(load(path, expected_sha256=digest.upper())(x), cm(x))
    with pytest.raises(ArtifactError, match="refusing to load"):
        load(path, expected_sha256="0" * 64)
    other = tmp_path / "other.so"
    cm.export(other)                       # a valid artifact, but not the one that was expected
    data = bytearray(other.read_bytes())
    with pytest.raises(ArtifactError, match="refusing to load"):
        load(other, expected_sha256=hashlib.sha256(bytes(data) + b"x").hexdigest())


def test_sha256_is_checked_before_the_library_is_opened(exported, tmp_path, monkeypatch) -> None:
    """A corrupted file never reaches tvm.runtime.load_module (which would run its code)."""
    import tvm

    _, _, path, _ = exported
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF            # inside the library section
    bad = tmp_path / "bad.so"
    bad.write_bytes(bytes(data))
    opened = []
    monkeypatch.setattr(tvm.runtime, "load_module", lambda *a, **k: opened.append(a))
    with pytest.raises(ArtifactError, match="checksum"):
        load(bad)
    with pytest.raises(ArtifactError, match="refusing"):
        load(path, expected_sha256="ab" * 32)
    assert not opened


def test_load_docstring_says_trusted_files_only() -> None:
    assert "Load only files you trust" in load.__doc__
    assert "trust" in (REPO / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- derived inputs
def test_derived_kernel_inputs_are_rebuilt_at_load(tmp_path) -> None:
    """A kernel family whose kernel reads a derived input: the artifact stores the packed codes and the
    derivation's name, and load() rebuilds the array; outputs identical in a fresh process."""
    from kernel_families import CODES_FROM_LOGICAL, derived_codes_family

    from passes.kernels import ManualKernels

    torch.manual_seed(1)
    model = Net(ShiftConfig(mode="Q", weight_bits=5, act_bits=(4, 6))).eval()
    x = torch.randn(2, 3, 8, 8)
    provider = ManualKernels(families={"dense": derived_codes_family, "conv2d": derived_codes_family})
    cm = compile(model, x, kernels=provider)
    assert all(d is not None and d.fn == CODES_FROM_LOGICAL for d in cm.weights.derive)
    path = tmp_path / "derived.so"
    cm.export(path)
    m = read_manifest(path)
    derived = [w for w in m["weights"] if "derive" in w]
    stored = [w for w in m["weights"] if "derive" not in w]
    assert len(derived) == 3 and all("offset" not in w for w in derived)
    assert len(stored) == 3 and not any(w["main_param"] for w in stored)
    assert torch.equal(load(path)(x), cm(x))
    torch.save(x, tmp_path / "x.pt")
    r = _fresh(f"""
        import sys, torch
        sys.path.insert(0, {str(REPO / 'tests')!r})
        import kernel_families, shiftcomp
        torch.save(shiftcomp.load({str(path)!r})(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
    """)
    assert r.returncode == 0, r.stderr
    assert torch.equal(torch.load(tmp_path / "y.pt"), cm(x))


def test_export_refuses_a_derivation_that_does_not_reproduce_the_input(tmp_path) -> None:
    import dataclasses

    from kernel_families import derived_codes_family

    from passes.kernels import ManualKernels

    def off_by_one(req):
        build = derived_codes_family(req)
        (w,) = build.weights
        return dataclasses.replace(build, weights=(dataclasses.replace(w, array=w.array.copy() + 0),))

    torch.manual_seed(2)
    layer = LinearShift(8, 4, config=ShiftConfig(act_bits=(4, 4))).eval()
    cm = compile(layer, torch.randn(2, 8), kernels=ManualKernels(families={"dense": off_by_one}))
    cm.weights.arrays[0] = cm.weights.arrays[0].copy()
    cm.weights.arrays[0].flat[0] += 1      # the array the kernel ran with no longer follows from the codes
    with pytest.raises(ArtifactError, match="does not reproduce"):
        cm.export(tmp_path / "bad.so")


def test_tvm_log_noise_is_not_shown(exported, tmp_path) -> None:
    """Export and load in a fresh process: TVM's 'Scope Saving/Loaded' lines do not reach stderr."""
    _, _, path, _ = exported
    r = _fresh(f"""
        import torch, shiftcomp
        from shiftcomp.nn import LinearShift
        from shiftcomp.config import ShiftConfig
        m = LinearShift(8, 4, config=ShiftConfig(act_bits=(4, 4))).eval()
        c = shiftcomp.compile(m, torch.randn(2, 8))
        c.export({str(tmp_path / 'n.so')!r})
        shiftcomp.load({str(tmp_path / 'n.so')!r})(torch.randn(2, 8))
        shiftcomp.load({str(path)!r})(torch.randn(2, 3, 8, 8))
    """)
    assert r.returncode == 0, r.stderr
    assert "Scope" not in r.stderr and "BlockBuilder destroyed" not in r.stderr, r.stderr
