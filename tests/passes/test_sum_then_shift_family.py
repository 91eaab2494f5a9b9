"""The sum-then-shift kernel family as sc.compile's default: which layers get it, bit-exactness of compiled
models against the PyTorch reference, the audit, export -> load in a fresh process, database precedence, and
a whole ResNet-20 checked op by op with sc.verify."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from experiment_support import run_artifact_in_fresh_process
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples
from torch import nn

from passes.kernels import PER_TERM_FAMILIES, DatabaseKernels, ManualKernels
from passes.sum_then_shift_family import PLAN_INPUT, plan_input, sum_then_shift_kernel
from schedules.compute import Conv2dSpec, weight_codes
from shiftcomp.compiler import compile
from shiftcomp.config import ShiftConfig
from shiftcomp.convert import convert
from shiftcomp.models import get_model
from shiftcomp.nn import Conv2dShift, LinearShift
from shiftcomp.reference import exact
from shiftcomp.verification import verify

CFG = ShiftConfig(mode="Q", weight_bits=5, act_bits=(3, 5))


def _exact(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with exact(model), torch.no_grad():
        return model(x)


def _family(cm, layer: str) -> str:
    return cm.layers[layer].task_name


class Convs(nn.Module):
    """Plain conv (stride 2, bias), grouped conv, depthwise conv, then a batched dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2dShift(3, 8, 3, stride=2, padding=1, config=CFG)
        self.grouped = Conv2dShift(8, 8, 3, padding=1, groups=2, bias=False, config=CFG)
        self.depthwise = Conv2dShift(8, 8, 3, padding=2, dilation=2, groups=8, config=CFG)
        self.fc = LinearShift(8 * 5 * 5, 6, config=CFG)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        y = torch.relu(self.grouped(y))
        y = self.depthwise(y)
        return self.fc(torch.flatten(y, 1))


@pytest.fixture(scope="module")
def convs():
    torch.manual_seed(0)
    model = Convs().eval()
    x = torch.randn(3, 3, 10, 10)
    return model, x, compile(model, x)


def test_default_family_is_sum_then_shift(convs) -> None:
    _, _, cm = convs
    assert _family(cm, "conv").startswith("sum_then_shift_conv2d_")
    assert _family(cm, "grouped").startswith("sum_then_shift_conv2d_")
    assert _family(cm, "depthwise").startswith("sum_then_shift_depthwise_")
    assert _family(cm, "fc").startswith("sum_then_shift_dense_")
    assert all(cm.layers[n].prologue is not None for n in cm.layers)
    assert cm.audit.datapath_multiplies == 0
    assert {k.layer for k in cm.audit.shift_kernels} == set(cm.layers)


def test_quantizing_pack_is_each_layers_audited_prologue(convs) -> None:
    """Every layer's input is quantised by its pack (no quantise kernel, no int32 x_q): the audit counts
    one prologue multiply x * 2**F per activation the pack copies, and none in the data path. ``grouped``'s
    input is the exception: ``conv`` (-> ReLU) stores it quantised straight into its packed layout (the integer
    handoff), so the quantise multiply is ``conv``'s epilogue, once per output value."""
    from schedules import sum_then_shift as sts

    model, _, cm = convs
    handed = {e.packed_for: e.layer for e in cm.epilogues if e.packed_for}
    assert handed == {"grouped": "conv"}
    prologues = {k.layer: k for k in cm.audit.kernels if k.role == "prologue"}
    assert set(prologues) == set(cm.layers) - set(handed)
    assert not any(k.name.startswith("shiftcomp_quantize") for k in cm.audit.kernels)
    shift_kernels = {k.layer: k for k in cm.audit.kernels if k.role == "shift"}
    for layer, low in cm.layers.items():
        if layer in handed:
            producer = cm.layers[handed[layer]].spec
            # scale + quantise: at least two float multiplies per output value of the producer
            assert shift_kernels[handed[layer]].epilogue.fmul >= 2 * int(np.prod(producer.out_shape))
            continue
        assert low.prologue_quantizes and prologues[layer].name == low.prologue
        shift, sign = (t.detach().numpy().astype(np.int8) for t in getattr(model, layer).integer_weights())
        k = sts.build(low.info.kind, low.spec, weight_codes(shift, sign, low.info.s0), cm.target,
                      tuple(low.info.act_bits))
        copied = np.count_nonzero(sts.pack_numpy(k.layout, np.ones(low.spec.x_shape, np.int64), k.lane_dtype))
        assert prologues[layer].data.mul == prologues[layer].data.fmul == copied
    assert cm.audit.datapath_multiplies == 0


@pytest.mark.bitexact
@settings(max_examples=examples(25), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.1, 1.0, 4.0, 100.0]))
def test_compiled_convs_bit_exact(convs, seed: int, scale: float) -> None:
    model, x, cm = convs
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * scale   # 100: saturated
    assert torch.equal(cm(xi), _exact(model, xi))


@pytest.mark.bitexact
def test_same_output_as_per_term_kernels(convs) -> None:
    model, x, cm = convs
    old = compile(model, x, kernels=ManualKernels(PER_TERM_FAMILIES))
    assert not any(old.layers[n].task_name.startswith("sum_then_shift") for n in old.layers)
    assert torch.equal(cm(x), old(x))


class Dense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = LinearShift(24, 16, config=CFG)
        self.fc2 = LinearShift(16, 5, bias=False, config=CFG)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.bitexact
@pytest.mark.parametrize("shape", [(1, 24), (7, 24), (2, 3, 24)], ids=["gemv", "batch7", "3d"])
def test_dense_family_by_batch(shape) -> None:
    torch.manual_seed(1)
    model = Dense().eval()
    x = torch.randn(shape)
    cm = compile(model, x)
    batched = int(np.prod(shape[:-1])) > 1
    for layer in ("fc1", "fc2"):
        assert _family(cm, layer).startswith("sum_then_shift_dense_") == batched, _family(cm, layer)
    for seed in range(3):
        xi = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * (seed + 1)
        assert torch.equal(cm(xi), _exact(model, xi))


def test_float_activations_keep_per_term_kernels() -> None:
    cfg = ShiftConfig(mode="Q", weight_bits=5, act_bits=None)
    model = nn.Sequential(Conv2dShift(3, 4, 3, config=cfg)).eval()
    x = torch.randn(2, 3, 6, 6)
    cm = compile(model, x)
    assert not _family(cm, "0").startswith("sum_then_shift")


@pytest.mark.parametrize("layer", ["conv", "depthwise", "fc"])
def test_plan_inputs_rebuilt_from_codes(convs, layer: str) -> None:
    model, _, cm = convs
    low = cm.layers[layer]
    shift, sign = (t.detach().numpy().astype(np.int8) for t in getattr(model, layer).integer_weights())
    codes = weight_codes(shift, sign, low.info.s0)
    assert len(low.weights) >= 3
    for w in low.weights:
        assert w.derive is not None and w.derive.fn == PLAN_INPUT
        assert np.array_equal(w.derive.apply(codes), w.array)
        assert np.array_equal(plan_input(codes, **w.derive.params), w.array)


class SmallImage(nn.Module):
    """4x4 images: one vector per pixel block, so the plans pad their runs (``TERM_MULTIPLE``); the first
    conv hands its BatchNorm + ReLU output to the second as packed integers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv2dShift(16, 24, 3, padding=1, bias=False, config=CFG)
        self.bn = nn.BatchNorm2d(24)
        self.conv2 = Conv2dShift(24, 24, 3, padding=1, config=CFG)
        self.down = Conv2dShift(24, 32, 1, stride=2, config=CFG)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv1(x)))
        return self.down(torch.relu(self.conv2(y)))


@pytest.mark.bitexact
def test_one_vector_blocks_pad_their_runs() -> None:
    torch.manual_seed(1)
    model = SmallImage().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 16, 4, 4)
    cm = compile(model, x)
    for name in ("conv1", "conv2", "down"):
        keywords = cm.layers[name].weights[0].derive.params["keywords"]
        assert keywords.get("term_multiple") == 4, (name, keywords)
        npos, tptr = cm.layers[name].weights[2].array, cm.layers[name].weights[3].array
        assert not (npos % 4).any() and not (np.diff(tptr) % 4).any()
    for seed in range(3):
        xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * 2
        assert torch.equal(cm(xi), _exact(model, xi))


@pytest.mark.bitexact
def test_export_load_fresh_process(convs, tmp_path) -> None:
    model, x, cm = convs
    path = tmp_path / "model.so"
    cm.export(path)
    assert torch.equal(run_artifact_in_fresh_process(path, x, tmp_path), cm(x))


class _RecordingDatabase:
    """A database without records that notes which tasks compile asked it about."""

    def __init__(self) -> None:
        self.queries = 0

    def query_tuning_record(self, *args, **kwargs):
        self.queries += 1
        return None


def test_database_does_not_override_sum_then_shift(convs) -> None:
    model, x, _ = convs
    db = _RecordingDatabase()
    cm = compile(model, x, kernels=DatabaseKernels(db))
    assert db.queries == 0
    assert all(cm.layers[n].task_name.startswith("sum_then_shift") for n in cm.layers)
    gemv = Dense().eval()
    compile(gemv, torch.randn(1, 24), kernels=DatabaseKernels(db))
    assert db.queries == 0   # the batch-1 dense layers get the table GEMV kernel (no tuning key either)
    compile(gemv, torch.randn(1, 24), kernels=DatabaseKernels(db, ManualKernels({**PER_TERM_FAMILIES,
                                                                               "dense": sum_then_shift_kernel})))
    assert db.queries == 2   # without it they keep the per-term kernels, which a database may serve


@pytest.mark.slow   # about a minute; tests/shiftcomp/test_models_compiled.py checks ResNet-20 in Q(4,8) in CI
@pytest.mark.bitexact
def test_resnet20_verified_per_op() -> None:
    torch.manual_seed(0)
    model = get_model("resnet20")
    convert(model, CFG)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cm = compile(model, x)
    assert all(low.task_name.startswith("sum_then_shift") for low in cm.layers.values()
               if isinstance(low.spec, Conv2dSpec))
    report = verify(cm, model, x, probes=False)
    assert report.ops_bit_exact, [o.layer for o in report.ops if not o.bit_exact]
    assert len(report.ops) == len(cm.layers) > 0
    assert cm.audit.datapath_multiplies == 0
