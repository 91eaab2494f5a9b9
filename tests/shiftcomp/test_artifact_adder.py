"""Adder weights in the artifact: 8-bit w_q bit-packed, kernel arrays rebuilt at load; float and wider
adder weights stay library constants. AdderNet and ShiftAddNet models, vpsadbw and plain kernels."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import shiftcomp as sc
from shiftcomp.adder import Conv2dAdder, LinearAdder
from shiftcomp.artifact import load, read_manifest
from shiftcomp.nn import Conv2dShift, LinearShift

REPO = Path(__file__).resolve().parents[2]
X_SHAPE = (8, 3, 6, 6)   # batch 8: the linear adder layer (8 rows) also takes the vpsadbw kernel


def _addernet() -> nn.Module:
    cfg = sc.AdderConfig(act_bits=(3, 5))
    return nn.Sequential(Conv2dAdder(3, 8, 3, padding=1, config=cfg), nn.BatchNorm2d(8), nn.ReLU(),
                         Conv2dAdder(8, 8, 3, stride=2, padding=1, bias=False, config=cfg), nn.ReLU(), nn.Flatten(),
                         LinearAdder(8 * 3 * 3, 10, config=sc.AdderConfig(act_bits=(4, 4), weight_bits=6)))


def _shiftaddnet() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    return sc.convert(model, sc.ShiftAddConfig(shift=sc.ShiftConfig(mode="PS", weight_bits=5, act_bits=(4, 4)),
                                               adder=sc.AdderConfig(act_bits=(3, 5))))


def _randomise(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(1, 3)
                m.running_mean.normal_()
            if isinstance(m, (Conv2dAdder, LinearAdder)):
                m.weight.mul_(3.0)          # spread w_q over most of the 8-bit range
    return model.eval()


def _distinct_codes(module: nn.Module) -> np.ndarray:
    """One integer per distinct weight value of a layer, straight from the PyTorch module."""
    if isinstance(module, (Conv2dAdder, LinearAdder)):
        return module.integer_weights().numpy().astype(np.int64)
    shift, sign = (t.numpy().astype(np.int64) for t in module.integer_weights())
    return np.where(sign != 0, sign * (shift + 1000), 0)        # one value per (sign, shift), zero apart


def _expected_packed_bytes(module: nn.Module) -> int:
    codes = _distinct_codes(module)
    k = len(np.unique(codes))
    bits = math.ceil(math.log2(k)) if k > 1 else 0
    return math.ceil(codes.size * bits / 8) + k


BUILDS = [("addernet", "auto"), ("addernet", "plain"), ("shiftaddnet", "auto"), ("shiftaddnet", "plain")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = {}
    tmp = tmp_path_factory.mktemp("adder_art")
    for name, kernel in BUILDS:
        torch.manual_seed(0)
        model = _randomise(_addernet() if name == "addernet" else _shiftaddnet())
        x = torch.randn(*X_SHAPE)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SHIFTCOMP_ADDER_KERNEL", kernel)
            cm = sc.compile(model, x)
        path = tmp / f"{name}_{kernel}.so"
        out[name, kernel] = (model, x, cm, path, cm.export(path))
    return out


@pytest.mark.bitexact
@pytest.mark.parametrize("build", BUILDS, ids=["-".join(b) for b in BUILDS])
def test_adder_weights_are_packed_and_rebuilt(exported, build) -> None:
    model, x, cm, path, info = exported[build]
    man = read_manifest(path)
    adders = [n for n, m in model.named_modules() if isinstance(m, (Conv2dAdder, LinearAdder))]
    derived = {w["layer"]: w["derive"]["fn"] for w in man["weights"] if "derive" in w and w["layer"] in adders}
    assert sorted(derived) == sorted(adders)
    fns = set(derived.values())
    assert fns == {"adder.plain"} if build[1] == "plain" else "adder.psadbw" in fns
    stored = [w for w in man["weights"] if w["layer"] in adders and "derive" not in w]
    assert all(not w["main_param"] for w in stored) and sorted(w["layer"] for w in stored) == sorted(adders)
    assert man["stats"]["library_weight_layers"] == [] and info.library_weight_layers == ()
    with sc.reference.exact(model):
        ref = model(x)
    assert torch.equal(cm(x), ref)
    assert torch.equal(load(path)(x), ref)


def test_packed_bytes_and_bits_count_adder_layers(exported) -> None:
    for build in BUILDS:
        model, _, cm, path, info = exported[build]
        layers = {n: m for n, m in model.named_modules()
                  if isinstance(m, (Conv2dAdder, LinearAdder, Conv2dShift, LinearShift))}
        assert set(info.bits) == set(layers)
        assert info.packed_weight_bytes == sum(_expected_packed_bytes(m) for m in layers.values())
        assert info.float32_weight_bytes == 4 * sum(m.weight.numel() if hasattr(m, "weight") else m.shift.numel()
                                                     for m in layers.values())
        assert read_manifest(path)["stats"]["packed_weight_bytes"] == info.packed_weight_bytes


def _fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=str(REPO), env={**os.environ, **(env or {})}, timeout=300)


def test_addernet_artifact_loads_with_runtime_only_tvm(exported, tmp_path) -> None:
    """The adder derivations are numpy only: an AdderNet artifact (no shift layers) loads with only
    libtvm_runtime (TVM_USE_RUNTIME_LIB=1), as it did when its weights were library constants."""
    builds = [b for b in BUILDS if b[0] == "addernet"]
    torch.save(exported[builds[0]][1], tmp_path / "x.pt")
    paths = [str(exported[b][3]) for b in builds]
    r = _fresh(f"""
        import torch, shiftcomp.artifact as A
        import tvm.base
        x = torch.load({str(tmp_path / 'x.pt')!r})
        torch.save([A.load(p)(x) for p in {paths!r}], {str(tmp_path / 'y.pt')!r})
        print("runtime_only", tvm.base._RUNTIME_ONLY)
    """, env={"TVM_USE_RUNTIME_LIB": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "runtime_only True" in r.stdout
    got = torch.load(tmp_path / "y.pt")
    assert all(torch.equal(g, exported[b][2](exported[b][1])) for g, b in zip(got, builds))


def test_fresh_process_loads_identical(exported, tmp_path) -> None:
    paths, want = [], []
    for build in BUILDS:
        _, x, cm, path, _ = exported[build]
        paths.append(str(path))
        want.append(cm(x))
    torch.save(exported[BUILDS[0]][1], tmp_path / "x.pt")
    r = _fresh(f"""
        import torch, shiftcomp
        x = torch.load({str(tmp_path / 'x.pt')!r})
        torch.save([shiftcomp.load(p)(x) for p in {paths!r}], {str(tmp_path / 'y.pt')!r})
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(tmp_path / "y.pt")
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_float_and_wide_adder_weights_stay_library_constants(tmp_path) -> None:
    torch.manual_seed(3)

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.narrow = Conv2dAdder(3, 4, 3, padding=1, config=sc.AdderConfig(act_bits=(3, 5)))
            self.wide = Conv2dAdder(4, 4, 3, padding=1, config=sc.AdderConfig(act_bits=(8, 8)))     # 16-bit w_q
            self.fp = LinearAdder(4 * 5 * 5, 6, config=sc.AdderConfig(act_bits=None))

        def forward(self, x):
            return self.fp(torch.flatten(self.wide(torch.relu(self.narrow(x))), 1))

    model = Mixed().eval()
    x = torch.randn(2, 3, 5, 5)
    cm = sc.compile(model, x)
    info = cm.export(tmp_path / "mixed.so")
    man = read_manifest(tmp_path / "mixed.so")
    assert info.library_weight_layers == ("wide", "fp") and man["stats"]["library_weight_layers"] == ["wide", "fp"]
    assert {w["layer"] for w in man["weights"]} == {"narrow"} and set(info.bits) == {"narrow"}
    assert info.packed_weight_bytes == _expected_packed_bytes(model.narrow)
    assert info.float32_weight_bytes == 4 * model.narrow.weight.numel()
    assert torch.equal(load(tmp_path / "mixed.so")(x), cm(x))


@pytest.mark.slow
@pytest.mark.bitexact
def test_resnet20_shiftadd_export_reload_fresh_process(tmp_path) -> None:
    """The zoo ShiftAddNet ResNet-20 (PS 5-bit shifts, 8-bit adders): every shift and adder layer's weights
    are in the packed section, and a fresh process reloads it bit-identical."""
    from shiftcomp.models.resnet_adder import resnet20_shiftadd

    torch.manual_seed(0)
    cfg = sc.ShiftAddConfig(shift=sc.ShiftConfig(mode="PS", weight_bits=5, act_bits=(4, 4)),
                            adder=sc.AdderConfig(act_bits=(3, 5)))
    model = resnet20_shiftadd(10, cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    cm = sc.compile(model, x)
    info = cm.export(tmp_path / "r20.so")
    layers = {n: m for n, m in model.named_modules()
              if isinstance(m, (Conv2dAdder, LinearAdder, Conv2dShift, LinearShift))}
    assert set(info.bits) == set(layers) and info.library_weight_layers == ()
    assert info.packed_weight_bytes == sum(_expected_packed_bytes(m) for m in layers.values())
    torch.save(x, tmp_path / "x.pt")
    r = _fresh(f"""
        import torch, shiftcomp
        x = torch.load({str(tmp_path / 'x.pt')!r})
        torch.save(shiftcomp.load({str(tmp_path / 'r20.so')!r})(x), {str(tmp_path / 'y.pt')!r})
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "y.pt"), cm(x))
