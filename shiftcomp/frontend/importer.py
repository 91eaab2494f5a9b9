"""torch.fx graph -> Relax IRModule, shift layers as composite calls (see composite.py).

Built on TVM's ``TorchFXImporter``; what this subclass adds:

* converters for ``LinearShift``/``Conv2dShift`` (quantise prologue + composite call, weights as constants),
* eval-mode BatchNorm (1d/2d) as ``x * a + b`` with ``a = weight / sqrt(var + eps)``, ``b = bias - mean * a``
  (float32, the same formula as ATen's CPU inference kernel; TVM's stock converter emits a training-mode
  ``batch_norm``), Hardtanh with its real bounds (the stock one ignores them), AvgPool2d with
  ``count_include_pad``, Dropout1d/2d/3d/AlphaDropout as identity,
* one up-front support check: an operator with no converter raises :class:`UnsupportedOpError` naming the
  op, the fx node, the module path and the source line, before anything is imported,
* every converter failure re-raised as :class:`FrontendError` with the same location.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import tvm
from torch import nn
from tvm import relax
from tvm.relax.frontend.torch.fx_translator import TorchFXImporter

from shiftcomp.errors import FrontendError, ShiftCompError, UnsupportedOpError

from .adder_layers import adder_layer_types, emit_adder_layer
from .composite import make_composite_function
from .quantize import emit_quantize
from .shift_layers import ShiftLayerData, read_shift_layer
from .tracer import is_shift_layer, shift_layer_types, trace

__all__ = ["ShiftFXImporter", "ImportedModel", "import_model", "import_graph", "node_location",
           "check_supported", "add_probes", "supported_ops"]


@dataclasses.dataclass
class ImportedModel:
    """Result of importing a model.

    Attributes:
        mod: the Relax IRModule (``main`` + one private composite function per shift layer).
        layers: shift layers by module path, in graph order.
        input_info: ``[(shape, dtype), ...]`` of ``main``'s inputs.
        graph_module: the traced fx graph (shift layers are leaves).
        probes: names of the extra outputs when imported with ``probes=True`` (after the model's outputs).
    """

    mod: tvm.IRModule
    layers: dict[str, ShiftLayerData]
    input_info: list[tuple[tuple[int, ...], str]]
    graph_module: fx.GraphModule
    probes: list[str] = dataclasses.field(default_factory=list)


def _user_frame(stack_trace: str | None) -> str | None:
    """The innermost ``File "...", line N`` of a recorded stack trace outside torch (user code)."""
    if not stack_trace:
        return None
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', stack_trace)
    for path, line, func in reversed(frames):
        if "/torch/" not in path and "/shiftcomp/frontend/" not in path:
            return f"{path}:{line} in {func}"
    return None


def node_location(node: fx.Node) -> str:
    """Human-readable location of an fx node: node name, module path, source line when known."""
    parts = [f"fx node {node.name!r}"]
    if node.op == "call_module":
        parts.append(f"module {node.target!r}")
    else:
        stack = node.meta.get("nn_module_stack")
        if stack:
            path = list(stack.values())[-1][0]
            parts.append(f"inside module {path!r}" if path else "in the root module")
        else:
            parts.append("in the root module")
    src = _user_frame(node.stack_trace)
    if src:
        parts.append(f"at {src}")
    return ", ".join(parts)


def _op_name(node: fx.Node, named_modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        m = named_modules[node.target]
        return f"{type(m).__module__}.{type(m).__qualname__}"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return node.op


def check_supported(gm: fx.GraphModule, convert_map: dict[Any, Callable]) -> None:
    """Raise :class:`UnsupportedOpError` for the first node without a converter (graph order)."""
    named = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module":
            ok = type(named[node.target]) in convert_map
        elif node.op == "call_function":
            ok = getattr(node.target, "__name__", None) in convert_map
        elif node.op == "call_method":
            ok = node.target in convert_map
        else:
            ok = node.op in ("placeholder", "output", "get_attr")
        if not ok:
            raise UnsupportedOpError(_op_name(node, named), node_location(node),
                                     "shiftcomp has no converter for it; supported ops: see "
                                     "shiftcomp.frontend.supported_ops()")


class ShiftFXImporter(TorchFXImporter):
    """TorchFXImporter with shift-layer converters and shiftcomp's fixes (see the module docstring)."""

    def __init__(self) -> None:
        self.shift_layers: dict[str, ShiftLayerData] = {}
        self.adder_layers: dict[str, Any] = {}                 # AdderLayerData by layer name
        super().__init__()

    # ------------------------------------------------------------------ convert map
    def create_convert_map(self) -> dict[Any, Callable]:  # noqa: D102
        cmap = super().create_convert_map()
        for cls in shift_layer_types():
            cmap[cls] = self._shift_layer
        for cls in adder_layer_types():
            cmap[cls] = self._adder_layer
        ident = lambda node: self.env[node.args[0]]  # noqa: E731
        cmap.update({
            nn.BatchNorm1d: self._batch_norm_eval,
            nn.BatchNorm2d: self._batch_norm_eval,
            nn.Hardtanh: self._hardtanh_module,
            nn.ReLU6: self._hardtanh_module,
            "hardtanh": self._hardtanh_function,
            nn.AvgPool2d: self._avg_pool2d_module_exact,
            nn.Dropout1d: ident, nn.Dropout2d: ident, nn.Dropout3d: ident, nn.AlphaDropout: ident,
            "dropout1d": ident, "dropout2d": ident, "dropout3d": ident, "alpha_dropout": ident,
        })
        return {key: self._located(key, fn) for key, fn in cmap.items()}

    def _located(self, key: Any, fn: Callable) -> Callable:
        def convert(node: fx.Node, *rest: Any) -> Any:
            try:
                return fn(node, *rest)
            except ShiftCompError:
                raise
            except Exception as e:  # noqa: BLE001 - re-raised with the location
                name = key.__name__ if isinstance(key, type) else str(key)
                raise FrontendError(f"failed to import {name!r} at {node_location(node)}: "
                                    f"{type(e).__name__}: {e}") from e

        return convert

    # ------------------------------------------------------------------ shift layers
    def _shift_layer(self, node: fx.Node) -> relax.Var:
        bb = self.block_builder
        x = self.env[node.args[0]]
        module = self.named_modules[node.target]
        in_shape = tuple(int(d) for d in x.ty.shape)
        if x.ty.dtype != "float32":
            raise FrontendError(f"shift layer {node.target!r} needs a float32 input, got {x.ty.dtype}")
        name, k = node.target, 1
        while name in self.shift_layers:  # the same module called more than once
            name, k = f"{node.target}#{k}", k + 1
        data = read_shift_layer(name, module, in_shape)
        info = data.info
        self.shift_layers[info.layer] = data
        if info.act_bits is not None:
            xq = emit_quantize(bb, x, info.act_bits[0], info.act_bits[1], info.rounding, qmax=info.act_qmax)
        else:
            xq = x
        fname = "composite_" + info.kind + "_" + re.sub(r"\W", "_", info.layer)
        gv = bb.add_func(make_composite_function(info), fname)
        args = [xq, relax.const(data.shift, "int8"), relax.const(data.sign, "int8"),
                relax.const(data.float_weight, "float32")]
        if data.bias is not None:
            args.append(relax.const(data.bias, "float32"))
        return bb.emit(relax.Call(gv, args))

    def _adder_layer(self, node: fx.Node) -> relax.Var:
        x = self.env[node.args[0]]
        if x.ty.dtype != "float32":
            raise FrontendError(f"adder layer {node.target!r} needs a float32 input, got {x.ty.dtype}")
        name, k = node.target, 1
        while name in self.adder_layers:  # the same module called more than once
            name, k = f"{node.target}#{k}", k + 1
        y, data = emit_adder_layer(self.block_builder, x, name, self.named_modules[node.target])
        self.adder_layers[name] = data
        return y

    # ------------------------------------------------------------------ fixed stock converters
    def _batch_norm_eval(self, node: fx.Node) -> relax.Var:
        x = self.env[node.args[0]]
        m = self.named_modules[node.target]
        if m.running_mean is None or m.running_var is None:
            raise FrontendError(f"BatchNorm {node.target!r} has track_running_stats=False; eval-mode "
                                f"import needs running statistics")
        c = int(m.num_features)
        var = m.running_var.detach().cpu().numpy().astype(np.float32)
        mean = m.running_mean.detach().cpu().numpy().astype(np.float32)
        w = (m.weight.detach().cpu().numpy().astype(np.float32) if m.weight is not None
             else np.ones(c, np.float32))
        b = (m.bias.detach().cpu().numpy().astype(np.float32) if m.bias is not None
             else np.zeros(c, np.float32))
        invstd = (np.float32(1) / np.sqrt(var + np.float32(m.eps))).astype(np.float32)
        alpha = (invstd * w).astype(np.float32)
        beta = (b - mean * alpha).astype(np.float32)
        shape = [1, c] + [1] * (x.ty.ndim - 2)
        bb = self.block_builder
        y = bb.emit(relax.op.multiply(x, relax.const(alpha.reshape(shape), "float32")))
        return bb.emit(relax.op.add(y, relax.const(beta.reshape(shape), "float32")))

    def _hardtanh_module(self, node: fx.Node) -> relax.Var:
        m = self.named_modules[node.target]
        x = self.env[node.args[0]]
        return self.block_builder.emit(relax.op.clip(x, float(m.min_val), float(m.max_val)))

    def _hardtanh_function(self, node: fx.Node) -> relax.Var:
        args = list(node.args) + [None] * 3
        lo = node.kwargs.get("min_val", args[1] if args[1] is not None else -1.0)
        hi = node.kwargs.get("max_val", args[2] if args[2] is not None else 1.0)
        return self.block_builder.emit(relax.op.clip(self.env[node.args[0]], float(lo), float(hi)))

    def _avg_pool2d_module_exact(self, node: fx.Node) -> relax.Var:
        m = self.named_modules[node.target]
        if m.divisor_override is not None:
            raise FrontendError(f"AvgPool2d {node.target!r}: divisor_override is not supported")
        return self._avg_pool2d_impl(self.env[node.args[0]], m.kernel_size, m.stride, m.padding,
                                     m.ceil_mode, m.count_include_pad)


def supported_ops() -> list[str]:
    """Names of the module classes, functions and methods the frontend can import (sorted)."""
    keys = ShiftFXImporter().convert_map.keys()
    return sorted(k.__name__ if isinstance(k, type) else str(k) for k in keys)


def add_probes(gm: fx.GraphModule) -> list[str]:
    """Make ``gm`` also return every shift layer's input and output (after the original outputs, flattened).

    Returns the probe names, in output order: ``"<layer>:in"``, ``"<layer>:out"`` per shift layer.
    """
    named = dict(gm.named_modules())
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    orig = out_node.args[0]
    outs = list(orig) if isinstance(orig, (tuple, list)) else [orig]
    names, probes = [], []
    seen: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module" and is_shift_layer(named[n.target]):
            k = seen.get(n.target, 0)
            seen[n.target] = k + 1
            layer = n.target if k == 0 else f"{n.target}#{k}"
            probes += [n.args[0], n]
            names += [f"{layer}:in", f"{layer}:out"]
    out_node.args = (tuple(outs + probes),)
    gm.graph.lint()
    gm.recompile()
    return names


def import_graph(gm: fx.GraphModule, input_info: Sequence[tuple[Sequence[int], str]]) -> ImportedModel:
    """Import a traced graph (from :func:`trace`) into Relax; see :func:`import_model`."""
    info = [(tuple(int(d) for d in shape), str(dtype)) for shape, dtype in input_info]
    importer = ShiftFXImporter()
    check_supported(gm, importer.convert_map)
    with torch.no_grad():
        mod = importer.from_fx(gm, info, False, True, False)
    return ImportedModel(mod=mod, layers=dict(importer.shift_layers), input_info=info, graph_module=gm)


def import_model(model: nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor,
                 probes: bool = False) -> ImportedModel:
    """Trace ``model`` (eval mode is the caller's job) and import it into Relax.

    Args:
        model: any traceable ``nn.Module`` (a bare shift layer included).
        example_inputs: one tensor or a sequence of tensors; only shapes and dtypes are used (static).
        probes: also return every shift layer's input and output (see :func:`add_probes`); the names are
            in ``ImportedModel.probes``.

    Raises:
        UnsupportedOpError: an operator has no converter (the message names it and where it is).
        FrontendError: a supported operator failed to import.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    input_info = [(tuple(t.shape), str(t.dtype).replace("torch.", "")) for t in example_inputs]
    gm = trace(model)
    names = add_probes(gm) if probes else []
    imported = import_graph(gm, input_info)
    imported.probes = names
    return imported
