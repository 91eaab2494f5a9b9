"""Fused epilogues: the elementwise ops after a sum-then-shift kernel (BatchNorm, residual add, ReLU, ReLU6,
constants) computed in the kernel's store give the same bits as the same compiled model with TVM's own glue
fusion only (``fuse="glue"``), and agree with the PyTorch model run through the exact reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples
from torch import nn
from tvm import relax

from passes import fuse_epilogue
from passes.fuse_epilogue import EPILOGUE_RULES, _constant_operand
from shiftcomp.compiler import compile
from shiftcomp.config import ShiftConfig
from shiftcomp.nn import Conv2dShift, LinearShift
from shiftcomp.reference import exact

CFG = ShiftConfig(mode="Q", weight_bits=5, act_bits=(3, 5))


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """BatchNorm statistics and affine parameters away from the identity (so the fused multiply matters)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.5)
    return model.eval()


class Block(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN (+ x) -> ReLU, then a depthwise conv -> BN -> ReLU6 and a dense -> BN1d."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv1 = Conv2dShift(c, c, 3, padding=1, bias=False, config=CFG)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = Conv2dShift(c, c, 3, padding=1, config=CFG)
        self.bn2 = nn.BatchNorm2d(c)
        self.dw = Conv2dShift(c, c, 3, stride=2, padding=1, groups=c, bias=False, config=CFG)
        self.bn3 = nn.BatchNorm2d(c)
        self.fc = LinearShift(c * 4 * 4, 10, config=CFG)
        self.bn4 = nn.BatchNorm1d(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + x)
        y = nn.functional.relu6(self.bn3(self.dw(y)))
        return self.bn4(self.fc(torch.flatten(y, 1)))


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    model = _randomise_bn(Block(), 1)
    x = torch.randn(3, 8, 8, 8)
    return model, x, compile(model, x, tuned=None), compile(model, x, tuned=None, fuse="glue")


@pytest.mark.bitexact
def test_fused_block_equals_the_glue_fused_compiled_model_bit_for_bit(block) -> None:
    model, x, fused, plain = block
    assert torch.equal(fused(x), plain(x))
    ops = {e.layer: e.ops for e in fused.epilogues}
    assert ops == {"conv1": ("multiply", "add", "relu"), "conv2": ("multiply", "add", "add", "relu"),
                   "dw": ("multiply", "add", "clip")}          # dense keeps its glue (family doc)
    assert plain.epilogues == []
    with pytest.raises(ValueError, match="fuse must be"):
        compile(model, x, tuned=None, fuse="everything")


@pytest.mark.bitexact
def test_conv1_stores_straight_into_conv2s_packed_input(block) -> None:
    """conv1 -> BN -> ReLU feeds only conv2 (stride 1, same padding): conv1's kernel writes conv2's packed
    int16 input itself. conv2's chain feeds the stride-2 depthwise conv, whose layout it cannot write."""
    model, x, fused, plain = block
    assert {e.layer: e.packed_for for e in fused.epilogues} == {"conv1": "conv2", "conv2": None, "dw": None}
    float_out = compile(model, x, tuned=None, fuse="epilogue")
    assert [e.packed_for for e in float_out.epilogues] == [None] * 3
    assert torch.equal(float_out(x), plain(x))
    # conv2's quantising pack is gone: its x * 2**F is now conv1's epilogue, not a prologue
    assert fused.audit.prologue.mul < float_out.audit.prologue.mul
    assert fused.audit.datapath.mul == 0


@pytest.mark.bitexact
def test_a_packed_input_over_the_size_limit_stays_a_float_store_and_pack(block, monkeypatch) -> None:
    """Past ``HANDOFF_MAX_PACKED_BYTES`` (the whole batch's packed tensor) conv1 stores float32 and conv2's
    quantising pack stays; the other fusions and the bits do not change."""
    model, x, fused, plain = block
    monkeypatch.setattr(fuse_epilogue, "HANDOFF_MAX_PACKED_BYTES", 0)
    big = compile(model, x, tuned=None)
    assert {e.layer: e.packed_for for e in big.epilogues} == {"conv1": None, "conv2": None, "dw": None}
    assert [e.ops for e in big.epilogues] == [e.ops for e in fused.epilogues]
    assert torch.equal(big(x), plain(x))


def test_fused_block_agrees_with_the_reference_and_keeps_the_audit_multiplication_free(block) -> None:
    model, x, fused, _ = block
    with exact(model), torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=1e-5)
    assert fused.audit.datapath.mul == 0
    # the BatchNorm scale is now each fused kernel's epilogue multiply, one per output element
    shift = {k.layer: k for k in fused.audit.kernels if k.role == "shift"}
    assert shift["conv1"].epilogue.fmul >= 2 * 3 * 8 * 8 * 8


def test_probed_outputs_stay_unfused() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(Block(), 2)
    x = torch.randn(1, 8, 8, 8)
    probed = compile(model, x, tuned=None, probes=True)
    assert probed.epilogues == []


def test_only_channel_or_scalar_constants_become_operands() -> None:
    out = (2, 4, 3, 3)
    f32 = lambda a: relax.const(np.asarray(a, np.float32))  # noqa: E731
    assert _constant_operand(f32(np.arange(4).reshape(4, 1, 1)), out)[0] == "channel"
    assert _constant_operand(f32(np.arange(4).reshape(1, 4, 1, 1)), out)[0] == "channel"
    assert _constant_operand(f32(2.5), out) == ("scalar", 2.5)
    assert _constant_operand(f32(np.ones((1, 1, 1, 1))), out)[0] == "scalar"
    assert _constant_operand(f32(np.arange(3).reshape(3, 1)), out) is None          # along H
    assert _constant_operand(f32(np.ones((2, 4, 1, 1))), out) is None               # along N and C
    assert _constant_operand(relax.const(np.ones((4, 1, 1)), "float64"), out) is None
    assert set(EPILOGUE_RULES) >= {"relax.multiply", "relax.add", "relax.nn.relu", "relax.clip"}


class Chain(nn.Module):
    """One shift conv followed by a drawn chain of elementwise ops."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, bias: bool, chain: tuple[str, ...]) -> None:
        super().__init__()
        self.conv = Conv2dShift(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=bias, config=CFG)
        self.bn = nn.BatchNorm2d(c_out)
        self.chain = chain
        self.scale = torch.linspace(-1.5, 2.0, c_out).view(c_out, 1, 1)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        for op in self.chain:
            if op == "bn":
                y = self.bn(y)
            elif op == "residual":
                y = y + r
            elif op == "rsub_scalar":
                y = 0.75 - y
            elif op == "channel_mul":
                y = self.scale * y
            elif op == "relu":
                y = torch.relu(y)
            elif op == "clip":
                y = torch.clamp(y, -0.5, 1.25)
        return y


@pytest.mark.bitexact
@settings(max_examples=examples(10), deadline=None)
@given(c=st.sampled_from([(4, 8, 1), (6, 6, 2), (8, 8, 8)]), stride=st.sampled_from([1, 2]), bias=st.booleans(),
       chain=st.lists(st.sampled_from(["bn", "residual", "rsub_scalar", "channel_mul", "relu", "clip"]),
                      min_size=1, max_size=4).map(tuple),
       seed=st.integers(0, 2 ** 16))
def test_drawn_chains_fuse_bit_exactly(c, stride, bias, chain, seed) -> None:
    c_in, c_out, groups = c
    torch.manual_seed(seed)
    model = _randomise_bn(Chain(c_in, c_out, stride, groups, bias, chain), seed)
    # 9 x 9 inputs keep every glue tensor >= 1 KiB: TVM keeps smaller glue intermediates on the stack, where
    # LLVM may form an FMA inside the unfused glue kernel (schedules/epilogue.py, numerics)
    x = torch.randn(2, c_in, 9, 9)
    r = torch.randn(2, c_out, (9 - 1) // stride + 1, (9 - 1) // stride + 1)
    fused = compile(model, (x, r), tuned=None)
    plain = compile(model, (x, r), tuned=None, fuse="glue")
    assert torch.equal(fused(x, r), plain(x, r)), chain
    assert len(fused.epilogues) == 1 and fused.epilogues[0].layer == "conv"
    with exact(model), torch.no_grad():
        torch.testing.assert_close(fused(x, r), model(x, r), rtol=1e-5, atol=1e-5)


class Pair(nn.Module):
    """A shift conv, a drawn chain of elementwise ops, and the next shift conv (stride 1, same padding)."""

    def __init__(self, c_in: int, c_mid: int, stride: int, next_kernel: int, depthwise: bool,
                 chain: tuple[str, ...]) -> None:
        super().__init__()
        self.conv_a = Conv2dShift(c_in, c_mid, 3, stride=stride, padding=1, bias=False, config=CFG)
        self.bn = nn.BatchNorm2d(c_mid)
        self.scale = torch.linspace(-1.5, 2.0, c_mid).view(c_mid, 1, 1)
        self.chain = chain
        self.conv_b = Conv2dShift(c_mid, c_mid if depthwise else 5, next_kernel, padding=next_kernel // 2,
                                  groups=c_mid if depthwise else 1, config=CFG)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_a(x)
        for op in self.chain:
            y = {"bn": self.bn, "relu": torch.relu, "channel_mul": lambda t: self.scale * t,
                 "clip": lambda t: torch.clamp(t, -0.5, 1.25)}[op](y)
        return self.conv_b(y)


@pytest.mark.bitexact
@settings(max_examples=examples(8), deadline=None)
@given(c=st.sampled_from([(3, 8), (8, 4)]), stride=st.sampled_from([1, 2]), hw=st.sampled_from([(9, 9), (8, 12)]),
       nxt=st.sampled_from([(3, False), (1, False), (3, True)]),
       chain=st.lists(st.sampled_from(["bn", "relu", "channel_mul", "clip"]), max_size=3).map(tuple),
       scale=st.sampled_from([1.0, 40.0]), seed=st.integers(0, 2 ** 16))
def test_drawn_conv_pairs_hand_over_integers_bit_exactly(c, stride, hw, nxt, chain, scale, seed) -> None:
    """The first conv's store quantises into the second's packed input: the same bits as the float output +
    quantising pack (``fuse="glue"``); ``scale=40`` saturates most activations into the second conv."""
    torch.manual_seed(seed)
    model = _randomise_bn(Pair(c[0], c[1], stride, nxt[0], nxt[1], chain), seed)
    x = torch.randn(2, c[0], *hw) * scale
    fused = compile(model, x, tuned=None)
    plain = compile(model, x, tuned=None, fuse="glue")
    assert [e.packed_for for e in fused.epilogues if e.layer == "conv_a"] == ["conv_b"]
    assert torch.equal(fused(x), plain(x)), chain
    with exact(model), torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
