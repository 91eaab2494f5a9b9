"""shiftcomp.compiler.compile: bare layers and small models, the calling convention, float activations, the
float baseline, errors, and shiftcomp.verify on a small model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shiftcomp.compiler import CompiledModel, compile
from shiftcomp.config import ShiftConfig
from shiftcomp.errors import AccumulatorOverflowError, LoweringError, SignatureError
from shiftcomp.nn import Conv2dShift, LinearShift
from shiftcomp.reference import exact
from shiftcomp.verification import ulp_diff, verify


def exact_out(model: nn.Module, *xs: torch.Tensor):
    with exact(model), torch.no_grad():
        return model(*xs)


class Net(nn.Module):
    def __init__(self, cfg: ShiftConfig) -> None:
        super().__init__()
        self.conv = Conv2dShift(3, 8, 3, padding=1, config=cfg)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = LinearShift(8 * 4 * 4, 10, config=cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, torch.Tensor, CompiledModel]:
    torch.manual_seed(0)
    model = Net(ShiftConfig(mode="Q", weight_bits=5, act_bits=(4, 6))).eval()
    x = torch.randn(2, 3, 8, 8)
    return model, x, compile(model, x)


def test_compiled_model_is_bit_exact(small) -> None:
    model, x, cm = small
    for seed in range(3):
        xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * (seed + 1)
        assert torch.equal(cm(xi), exact_out(model, xi))
    assert cm.audit.datapath_multiplies == 0
    assert "shift layers" in repr(cm)


def test_signature_checks(small) -> None:
    model, x, cm = small
    with pytest.raises(SignatureError, match="expected shape"):
        cm(torch.randn(1, 3, 8, 8))
    with pytest.raises(SignatureError, match="dtype"):
        cm(x.double())
    with pytest.raises(SignatureError, match="expected 1 input"):
        cm(x, x)
    for bad in (float("nan"), float("inf"), -float("inf")):
        xb = x.clone()
        xb[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            cm(xb)


def test_call_runs_no_torch_compute_op(small) -> None:
    """The input checks run in numpy: a torch op (``isfinite``) would start torch's OpenMP workers, which then
    spin on the cores that TVM's thread pool needs (a batch-64 ResNet-20 call at 2 threads took ~1.4x as
    long). Only views and the numpy hand-over are dispatched."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model, x, cm = small

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record() as rec:
        out = cm(x)
    assert rec.ops and {op.split(".")[1] for op in rec.ops} <= {"detach", "lift_fresh", "alias"}, rec.ops
    assert torch.equal(out, exact_out(model, x))


def test_train_mode_restored_and_eval_used() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4)))
    model.train()
    x = torch.randn(2, 3, 8, 8)
    cm = compile(model, x)
    assert model.training and model.bn.training
    model.eval()
    assert torch.equal(cm(x), exact_out(model, x))


@pytest.mark.parametrize("layer", [
    lambda: LinearShift(7, 5, bias=True, config=ShiftConfig(mode="PS", weight_bits=3, act_bits=(2, 2))),
    lambda: Conv2dShift(4, 4, 3, stride=2, padding="valid", groups=4, bias=False,
                        config=ShiftConfig(weight_bits=6, act_bits=(8, 8), rounding="floor")),
    lambda: Conv2dShift(2, 4, (2, 3), padding="same", dilation=2, config=ShiftConfig(weight_bits=4, act_bits=(3, 5))),
])
def test_bare_shift_layer_compiles(layer) -> None:
    torch.manual_seed(3)
    m = layer().eval()
    x = torch.randn(2, 3, 7) if isinstance(m, LinearShift) else torch.randn(1, m.in_channels, 9, 8)
    if isinstance(m, LinearShift):
        x = torch.randn(2, 3, 7)  # leading dims are flattened for the kernel and restored
    cm = compile(m, x)
    assert torch.equal(cm(x), exact_out(m, x))


def test_multiple_inputs_and_tuple_outputs() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            cfg = ShiftConfig(act_bits=(4, 4))
            self.a = LinearShift(6, 3, config=cfg)
            self.b = LinearShift(6, 3, config=cfg)

        def forward(self, x: torch.Tensor, y: torch.Tensor):
            return self.a(x) + self.b(y), self.b(x)   # b is called twice

    torch.manual_seed(0)
    m = Two().eval()
    x, y = torch.randn(2, 6), torch.randn(2, 6)
    cm = compile(m, (x, y))
    out = cm(x, y)
    ref = exact_out(m, x, y)
    assert isinstance(out, tuple) and len(out) == 2
    assert torch.equal(out[1], ref[1])
    assert torch.equal(out[0], ref[0])
    assert set(cm.layers) == {"a", "b", "b#1"}


def test_float_activations_use_exponent_add_kernels() -> None:
    """act_bits=None: no multiplies either; float32 accumulation, within the summation error bound."""
    torch.manual_seed(0)
    m = Conv2dShift(4, 6, 3, padding=1, config=ShiftConfig(weight_bits=5, act_bits=None)).eval()
    x = torch.randn(2, 4, 6, 5)
    cm = compile(m, x)
    assert cm.layers["layer"].float_acts and cm.audit.datapath_multiplies == 0
    ref = exact_out(m, x).double()
    s, g = m.integer_weights()
    w_abs = (g.double() * torch.exp2(s.double())).abs()
    k = 4 * 3 * 3                                          # terms per output
    u = 2.0 ** -24                                         # float32 unit roundoff
    sum_abs = torch.nn.functional.conv2d(x.double().abs(), w_abs, padding=1)   # Σ |x w|
    bias = m.bias.double().abs().view(1, -1, 1, 1)
    # float32 recursive summation (gamma_k Σ|xw|) + the reference's own roundings (sum, bias add)
    bound = (k * u / (1 - k * u)) * sum_abs + 2 * u * (ref.abs() + bias)
    assert bool(((cm(x).double() - ref).abs() <= bound).all())


def test_float_activations_without_float_kernels_is_a_clear_error() -> None:
    from passes.kernels import KERNEL_FAMILIES, ManualKernels

    def no_float(req):
        raise NotImplementedError("no float kernels here")

    provider = ManualKernels(families={**KERNEL_FAMILIES, "dense_float": no_float})
    m = LinearShift(4, 3, config=ShiftConfig(act_bits=None)).eval()
    with pytest.raises(LoweringError, match="float activations"):
        compile(m, torch.randn(2, 4), kernels=provider)


def test_accumulator_overflow_is_refused() -> None:
    m = LinearShift(8, 2, config=ShiftConfig(mode="PS", weight_bits=8, act_bits=(16, 16))).eval()
    with torch.no_grad():
        m.shift.copy_(torch.tensor([[-126.0] * 4 + [0.0] * 4] * 2))
        m.sign.fill_(1.0)
    with pytest.raises(AccumulatorOverflowError, match="'layer'"):
        compile(m, torch.randn(1, 8))


def test_float_baseline_build(small) -> None:
    model, x, cm = small
    base = compile(model, x, lower=False)
    assert not base.layers and base.audit.other_multiplies > 0
    with torch.no_grad():
        np.testing.assert_allclose(base(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        base.export("/tmp/never.so")


def test_vm_runner_for_timing(small) -> None:
    model, x, cm = small
    run = cm.vm_runner(x)
    out = run()
    assert np.array_equal(out.numpy(), cm(x).numpy())


def test_verify_report_small_model(small) -> None:
    model, x, cm = small
    report = verify(cm, model, x)
    assert report.ok and report.ops_bit_exact and report.argmax_identical
    assert [o.layer for o in report.ops] == ["conv", "fc"]
    assert report.ops[0].in_model is not None and report.ops[0].in_model["in"][0] == 0  # model input, no drift
    text = str(report)
    assert "shift ops bit-exact: 2/2" in text


def test_ulp_diff() -> None:
    a = torch.tensor([1.0, -0.0, 1.0, -1.0])
    b = torch.tensor([1.0, 0.0, float(np.nextafter(np.float32(1), np.float32(2))), 1.0])
    assert ulp_diff(a, b).tolist() == [0, 0, 1, 2 * 0x3F800000]


def test_cuda_cross_compile_without_a_gpu(tmp_path) -> None:
    """target="cuda"-style builds need no GPU: kernels get thread bindings, the audit and export work."""
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4))).eval()
    x = torch.randn(2, 3, 8, 8)
    cm = compile(model, x, target={"kind": "cuda", "arch": "sm_90"})
    assert cm.device_type == "cuda" and cm.audit.datapath_multiplies == 0
    convs = [low for low in cm.layers.values() if low.info.kind == "conv2d"]
    assert convs and all(low.task_name.startswith("sum_then_shift_cuda_conv2d") for low in convs)
    for low in convs:     # the plan is rebuilt from the packed codes at load time
        assert [w.name for w in low.weights] == ["seg_ptr", "seg_level", "seg_npos", "seg_tptr", "term"]
        assert all(np.array_equal(w.derive.apply(low.logical_codes), w.array) for w in low.weights)
    info = cm.export(tmp_path / "cuda_model.so")
    assert info.packed_weight_bytes > 0
    import tvm

    if not tvm.cuda(0).exist:
        with pytest.raises(RuntimeError, match="no such device"):
            cm(x)
    else:  # pragma: no cover - GPU machines
        assert torch.equal(cm(x), exact_out(model, x))


def test_verify_bare_dense_with_leading_dims_via_package_api() -> None:
    import shiftcomp as sc

    torch.manual_seed(0)
    layer = LinearShift(12, 5, config=ShiftConfig(mode="PS", weight_bits=4, act_bits=(3, 4))).eval()
    x = torch.randn(2, 3, 12)
    cm = sc.compile(layer, x)
    report = sc.verify(cm, layer, x, probes=False)
    assert report.ok and report.max_ulp == 0 and report.rows == 6
    assert report.ops[0].in_model is None


def test_mixed_float_and_shift_layers_and_float_activations_verify() -> None:
    """A model with a plain float conv, a float-activation shift layer and fixed-point ones."""
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)                                   # stays float
            self.fconv = Conv2dShift(4, 4, 3, padding=1, config=ShiftConfig(act_bits=None))
            self.qfc = LinearShift(4 * 6 * 6, 5, config=ShiftConfig(act_bits=(4, 6)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.qfc(torch.flatten(torch.relu(self.fconv(torch.relu(self.stem(x)))), 1))

    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(3, 3, 6, 6)
    cm = compile(model, x)
    assert set(cm.layers) == {"fconv", "qfc"} and cm.audit.datapath_multiplies == 0
    assert cm.audit.other_multiplies >= 3 * 4 * 6 * 6 * 27   # the float stem conv
    report = verify(cm, model, x, probes=False)
    fops = {o.layer: o for o in report.ops}
    assert fops["fconv"].float_acts and fops["fconv"].within_bound
    assert fops["qfc"].bit_exact and report.ops_bit_exact


def test_verify_probed_twin_uses_the_original_settings(small, monkeypatch, tmp_path) -> None:
    """verify(probes=True) recompiles with the compiled model's own tuned/fuse/kernels settings."""
    import shiftcomp.verification as V
    from passes.kernels import ManualKernels

    model, x, _ = small
    provider = ManualKernels()
    cm = compile(model, x, tuned=None, fuse=False, kernels=provider)
    seen = {}
    real = V.compile_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(V, "compile_model", spy)
    report = verify(cm, model, x, probes=True)
    assert report.ok
    assert seen["probes"] is True and seen["fuse"] is False and seen["tuned"] is None
    assert seen["kernels"] is provider and seen["target"] is cm.target


def test_compile_stage_returns_the_intermediate_module(small) -> None:
    from shiftcomp.compiler import compile_stage

    model, x, cm = small
    fused, state = compile_stage(model, x, "llvm", "fuse")
    assert set(state.report.layers) == set(cm.layers) and "apply_database" not in state.modules
    assert len(state.modules["lift_weights"]["main"].params) == len(cm.relax_module["main"].params)
    with pytest.raises(ValueError, match="unknown stage"):
        compile_stage(model, x, "llvm", "nope")
