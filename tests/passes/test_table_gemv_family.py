"""The table GEMV family as sc.compile's batch-1 dense default: which layers get it, bit-exactness of a
compiled model against the PyTorch reference, the multiplication audit, inputs rebuilt from the codes,
export -> load in a fresh process, and the fallback for 16-bit activations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from experiment_support import run_artifact_in_fresh_process
from torch import nn

from passes.kernels import PER_TERM_FAMILIES, ManualKernels
from passes.table_gemv_family import TABLE_INPUT, table_input
from schedules.compute import weight_codes
from shiftcomp.compiler import compile
from shiftcomp.config import ShiftConfig
from shiftcomp.nn import LinearShift
from shiftcomp.reference import exact

CFG = ShiftConfig(mode="Q", weight_bits=5, act_bits=(3, 5))


def _exact(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with exact(model), torch.no_grad():
        return model(x)


def _mlp(cfg: ShiftConfig) -> nn.Module:
    torch.manual_seed(3)
    # 300 inputs: two chunks of the table kernel; 70 outputs: a partial 32/64-lane block; fc2 without bias
    model = nn.Sequential(LinearShift(300, 70, config=cfg), nn.ReLU(), LinearShift(70, 5, bias=False, config=cfg))
    with torch.no_grad():   # fc2: powers of two spread evenly over all 15 levels (too many for the nibble window)
        w = model[2].weight
        w.copy_(torch.sign(torch.randn(w.shape)) * 2.0 ** torch.randint(-14, 1, w.shape).float())
    return model.eval()


@pytest.fixture(scope="module")
def mlp():
    model = _mlp(CFG)
    x = torch.randn(1, 300)
    return model, x, compile(model, x)


def test_batch1_dense_gets_the_table_kernel(mlp) -> None:
    _, _, cm = mlp
    assert cm.layers["0"].task_name.startswith("table_gemv_dense_1x300to70_nibble")   # He init: a 7-level window
    assert cm.layers["2"].task_name.startswith("table_gemv_dense_1x70to5_byte")
    assert all(cm.layers[n].prologue is not None for n in ("0", "2"))
    assert cm.audit.datapath_multiplies == 0
    assert {k.layer for k in cm.audit.shift_kernels} == {"0", "2"}


@pytest.mark.bitexact
@pytest.mark.parametrize("scale", [0.1, 1.0, 4.0, 1000.0])   # 1000: every activation saturated (fc2 sees ReLU)
def test_compiled_bit_exact(mlp, scale: float) -> None:
    model, x, cm = mlp
    for seed in range(3):
        xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * scale
        assert torch.equal(cm(xi), _exact(model, xi))


@pytest.mark.bitexact
def test_same_output_as_per_term_kernels(mlp) -> None:
    model, x, cm = mlp
    old = compile(model, x, kernels=ManualKernels(PER_TERM_FAMILIES))
    assert not any(old.layers[n].task_name.startswith("table_gemv") for n in old.layers)
    assert torch.equal(cm(x), old(x))


@pytest.mark.parametrize("layer,names", [("0", ["code_nibbles", "tail_ptr", "tail_term", "base"]),
                                         ("2", ["code_bytes", "nneg"])])
def test_inputs_rebuilt_from_codes(mlp, layer: str, names: list) -> None:
    model, _, cm = mlp
    low = cm.layers[layer]
    shift, sign = (t.detach().numpy().astype(np.int8) for t in model[int(layer)].integer_weights())
    codes = weight_codes(shift, sign, low.info.s0)
    assert [w.name for w in low.weights] == names
    for w in low.weights:
        assert w.derive is not None and w.derive.fn == TABLE_INPUT
        assert np.array_equal(w.derive.apply(codes), w.array)
        assert np.array_equal(table_input(codes, **w.derive.params), w.array)


def test_every_variant_rebuilds_its_own_layout() -> None:
    """Artifacts name their variant: one written with the scalar-tail ``nibble`` layout still gets that layout
    back, next to the gathered one of ``nibble_gather``."""
    from schedules import table_gemv_layout as layout
    from schedules.specs import DenseSpec, spec_to_json

    codes = np.random.default_rng(4).integers(-9, 10, size=(40, 70)).astype(np.int8)
    spec = DenseSpec(1, 70, 40, frac_bits=5, s0=-4)
    derive = {"byte": layout.derive_inputs, "nibble": layout.derive_nibble_inputs,
              "nibble_gather": layout.derive_gather_tail_inputs}
    for variant, fn in derive.items():
        want = fn(spec, codes, lanes=64)
        for i, arr in enumerate(want):
            got = table_input(codes, spec=spec_to_json(spec), lanes=64, variant=variant, index=i)
            assert np.array_equal(got, arr), (variant, i)
    assert table_input(codes, spec=spec_to_json(spec), lanes=64, variant="nibble", index=2).size != \
        table_input(codes, spec=spec_to_json(spec), lanes=64, variant="nibble_gather", index=2).size


@pytest.mark.bitexact
def test_export_load_fresh_process(mlp, tmp_path) -> None:
    _, x, cm = mlp
    path = tmp_path / "model.so"
    cm.export(path)
    assert torch.equal(run_artifact_in_fresh_process(path, x, tmp_path), cm(x))


@pytest.mark.bitexact
def test_16bit_activations_keep_the_column_block_kernel() -> None:
    model = _mlp(ShiftConfig(mode="Q", weight_bits=5, act_bits=(8, 8)))
    x = torch.randn(1, 300)
    cm = compile(model, x)
    assert not any(cm.layers[n].task_name.startswith(("table_gemv", "sum_then_shift")) for n in cm.layers)
    assert torch.equal(cm(x * 50), _exact(model, x * 50))
