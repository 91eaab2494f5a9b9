"""Benchmark cases: per-layer shapes (ResNet/MobileNetV2 layers, linears) and the shift configuration."""
from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shiftcomp.config import ShiftConfig
from shiftcomp.convert import convert

__all__ = ["LayerCase", "DEFAULT_LAYER_CASES", "DEFAULT_MODELS", "find_cases", "default_shift_config", "to_shift"]


@dataclass(frozen=True)
class LayerCase:
    """One layer shape. ``kind``: ``"conv"`` (incl. depthwise via ``groups``) or ``"linear"``.

    conv: input ``(batch, in_ch, hw, hw)``, ``kernel x kernel`` weights, ``stride``, ``padding`` (the default
    conv cases have no bias, as in the ResNets/MobileNetV2, so their kernels are the models' kernels).
    linear: input ``(batch, in_ch)`` -> ``(batch, out_ch)``.
    """

    name: str
    kind: str
    in_ch: int
    out_ch: int
    hw: int = 1
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    groups: int = 1
    batch: int = 1
    bias: bool = True
    deepshift_key: str | None = None

    def float_module(self) -> nn.Module:
        """A float32 ``nn.Sequential`` with the one layer (deterministic init, seed 0)."""
        g = torch.manual_seed(0)
        if self.kind == "conv":
            m: nn.Module = nn.Conv2d(self.in_ch, self.out_ch, self.kernel, self.stride, self.padding,
                                     groups=self.groups, bias=self.bias)
        else:
            m = nn.Linear(self.in_ch, self.out_ch, bias=self.bias)
        del g
        return nn.Sequential(m).eval()

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        shape = (self.batch, self.in_ch, self.hw, self.hw) if self.kind == "conv" else (self.batch, self.in_ch)
        return (torch.randn(*shape, generator=gen),)

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates (shift-adds for the shift layer) of one call."""
        if self.kind == "conv":
            return self.batch * self.out_ch * self.out_hw ** 2 * (self.in_ch // self.groups) * self.kernel ** 2
        return self.batch * self.in_ch * self.out_ch


def _conv(name: str, c: int, hw: int, o: int | None = None, groups: int = 1, stride: int = 1,
          key: str | None = None, batch: int = 1) -> LayerCase:
    return LayerCase(name, "conv", c, o or c, hw, 3, stride, 1, groups, batch, False, key)


#: Default per-layer cases (batch 1): ResNet-20 (CIFAR) and ResNet-18 convs, MobileNetV2 depthwise, linears.
DEFAULT_LAYER_CASES: tuple[LayerCase, ...] = (
    _conv("r20_conv16@32", 16, 32, key="conv16x16@32"),
    _conv("r20_conv32@16", 32, 16),
    _conv("r20_conv64@8", 64, 8),
    _conv("r18in_conv64@56", 64, 56, key="conv64x64@56"),
    _conv("r18_conv64@32", 64, 32),
    _conv("r18_conv128@16", 128, 16),
    _conv("r18_conv256@8", 256, 8),
    _conv("r18_conv512@4", 512, 4),
    _conv("mbv2_dw32@32", 32, 32, groups=32),
    _conv("mbv2_dw144@16", 144, 16, groups=144),
    _conv("mbv2_dw576@8", 576, 8, groups=576),
    LayerCase("linear1x4096x4096", "linear", 4096, 4096, batch=1, deepshift_key="linear1x4096x4096"),
    LayerCase("linear64x512x10", "linear", 512, 10, batch=64, deepshift_key="linear64x512x10"),
)

#: Default models of the end-to-end suite (names of ``shiftcomp.models.get_model``).
DEFAULT_MODELS: tuple[str, ...] = ("simple_conv", "resnet20", "resnet18", "mobilenetv2")


def find_cases(names: Iterable[str] | None, cases: Sequence[LayerCase] = DEFAULT_LAYER_CASES) -> list[LayerCase]:
    """Cases by name (all when ``names`` is falsy). Unknown names raise ``KeyError`` listing the known."""
    if not names:
        return list(cases)
    by = {c.name: c for c in cases}
    out = []
    for n in names:
        if n not in by:
            raise KeyError(f"unknown layer case {n!r}; known: {', '.join(by)}")
        out.append(by[n])
    return out


# ------------------------------------------------------------------------------------------------
# model conversion
# ------------------------------------------------------------------------------------------------
def default_shift_config(weight_bits: int = 5, act_bits: tuple[int, int] | None = (3, 5), mode: str = "Q") -> Any:
    """The shift configuration the benchmarks use: DeepShift-Q, 5-bit weights, 8-bit activations Q(3,5)
    (DeepShift's ``-ab 3 5``; int32 accumulators on the zoo models). Documented in BENCHMARKS.md."""
    return ShiftConfig(mode=mode, weight_bits=weight_bits, act_bits=act_bits)


def to_shift(model: nn.Module, config: Any) -> nn.Module:
    """A converted deep copy of ``model`` (``shiftcomp.convert``), in eval mode."""
    return convert(copy.deepcopy(model), config).eval()
