"""The float multiply baseline of a shift model: the same network with its power-of-two weights as float32
``nn.Conv2d`` / ``nn.Linear`` (activation quantisation dropped), imported through ``torch.export``.

Benchmarks build it with TVM next to the shift build (``shiftcomp.bench``), and ``shiftcomp.tune`` tunes
it with the same budget, so "equal tuning" is equal by construction.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import tvm
from torch import nn
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program
from tvm.target import Target

from shiftcomp.nn import Conv2dShift, is_shift_layer

__all__ = ["float_twin", "import_float", "prepare_module"]


def _float_layer(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        w = layer.quantized_weight().detach().float().clone()
    bias = layer.bias
    if isinstance(layer, Conv2dShift):
        new: nn.Module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                                   padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                   bias=bias is not None)
    else:
        new = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if bias is not None:
            new.bias.copy_(bias.detach().float())
    return new.eval()


def float_twin(model: nn.Module) -> nn.Module:
    """A float32 copy of a shift model: every shift layer replaced by ``nn.Conv2d``/``nn.Linear`` holding
    its power-of-two weights ``quantized_weight()``. A bare shift layer gives a bare float layer."""
    if is_shift_layer(model):
        return _float_layer(model)
    twin = copy.deepcopy(model).eval()

    def convert(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if is_shift_layer(child):
                setattr(parent, name, _float_layer(child))
            else:
                convert(child)

    convert(twin)
    return twin


def import_float(model: nn.Module, example_inputs: Sequence[Any]) -> tvm.IRModule:
    """Relax module of :func:`float_twin` (``torch.export`` + ``from_exported_program``, params bound)."""
    twin = float_twin(model)
    with torch.no_grad():
        ep = torch.export.export(twin, tuple(example_inputs))
    return from_exported_program(ep, keep_params_as_input=False, unwrap_unit_return_tuple=True)


def prepare_module(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Legalise and fuse a Relax module as TVM's default pipeline does before its database step.

    Passes: DecomposeOpsForInference, CanonicalizeBindings, LegalizeOps, AnnotateTIROpPattern, FoldConstant,
    FuseOps, FuseTIR. ``op_pattern`` attrs are dropped afterwards so that a second run hashes the same
    PrimFuncs (tuning and applying both call this). A module of PrimFuncs only is returned unchanged.
    """
    if not any(isinstance(f, relax.Function) for _, f in mod.functions_items()):
        return mod
    seq = tvm.transform.Sequential([
        relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
        relax.transform.FuseOps(), relax.transform.FuseTIR(),
    ])
    with target, tvm.transform.PassContext(opt_level=3):
        out = seq(mod)
    for gv, f in list(out.functions_items()):
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "op_pattern" in f.attrs:
            out[gv] = f.without_attr("op_pattern")
    return out
