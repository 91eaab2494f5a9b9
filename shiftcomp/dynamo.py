"""``torch.compile(model, backend="shiftcomp")``: shiftcomp as a TorchDynamo backend.

    compiled = torch.compile(model.eval(), backend="shiftcomp", options={"target": "llvm"})
    y = compiled(x)
    print(shiftcomp.dynamo_report(compiled))     # which layers ran compiled, which in eager, and why

The backend is found by name through the ``torch_dynamo_backends`` entry point in ``pyproject.toml``, so no
import is needed after ``pip install``. Options (``options={...}``; the same meaning as in
:func:`shiftcomp.compile`): ``target`` (default ``"llvm"``), ``tuned`` (passed on to ``shiftcomp.compile``
only when given) and ``debug`` (print each graph's outcome when it is compiled; the environment variable
``SHIFTCOMP_DYNAMO_DEBUG=1`` does the same). An unknown key or a bad value raises
:class:`shiftcomp.errors.BackendOptionError` when dynamo first compiles (dynamo wraps it in its
``BackendCompilerFailed``; the original is its ``inner_exception``).

How a dynamo graph becomes a shiftcomp compile. Dynamo inlines every module call: a shift or adder layer arrives
as the few dozen tensor ops of its fake-quant forward, its parameters as graph inputs, and nothing marks
it as one layer (``torch._dynamo.allow_in_graph`` does not apply to modules). Every node does carry
``meta["nn_module_stack"]``: the module calls it sits in, as source paths such as ``L['self'].layer1.0.conv1``.
The backend resolves those paths against the traced frame's locals and globals to the real module
objects, and rebuilds the graph ``shiftcomp.frontend.trace`` would have produced: the nodes of each call to
a leaf module (a shift or adder layer, or a ``torch.nn`` built-in such as BatchNorm2d or ReLU, as fx's tracer
decides) collapse back into one ``call_module`` node, parameters and buffers used outside those calls
become constants, and the remaining user code (adds, slicing, padding) is kept as it is. That graph goes
through :func:`shiftcomp.compile` unchanged, so the result is the same computation, bit for bit, with the
same layer names.

Per graph dynamo hands over:

* no shift or adder layer in it (``shiftcomp.nn``'s ``LinearShift``/``Conv2dShift``, ``LinearAdder``/
  ``Conv2dAdder``; ShiftAddNet's pairs are one of each): returned to PyTorch unchanged;
* any module in training mode: returned unchanged, with one warning (inference only);
* anything the rebuild or ``shiftcomp.compile`` cannot handle (an unsupported op, a layer split by a
  graph break, an error while building): the graph runs in eager PyTorch and the report says why. No
  such failure escapes from ``torch.compile``;
* otherwise compiled for the static shapes of its inputs. When dynamo hands over a graph with dynamic
  sizes (after it has seen a second input shape), each new shape is compiled on first use and cached.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from shiftcomp.errors import BackendOptionError
from shiftcomp.nn import AdderLayer, is_shift_layer

__all__ = ["shiftcomp_backend", "dynamo_report", "DynamoReport", "GraphRecord", "LayerStatus", "reset",
           "OPTION_KEYS", "DEBUG_ENV"]

DEBUG_ENV = "SHIFTCOMP_DYNAMO_DEBUG"
OPTION_KEYS = ("target", "tuned", "debug")


# ---------------------------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class _Options:
    target: Any
    compile_kwargs: dict[str, Any]
    debug: bool


def _parse_options(options: Mapping[str, Any] | None, mode: str | None) -> _Options:
    """Validate ``options`` (raises :class:`BackendOptionError`); the target is resolved here."""
    if mode not in (None, "default"):
        raise BackendOptionError(f"torch.compile mode={mode!r} is not supported by the shiftcomp backend; "
                                 f"pass options={{...}} with keys {list(OPTION_KEYS)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise BackendOptionError(f"unknown option(s) {unknown} for the shiftcomp backend; valid keys: "
                                 f"{list(OPTION_KEYS)}")
    target = options.get("target", "llvm")
    from shiftcomp.compiler import resolve_target

    try:
        resolve_target(target)
    except Exception as e:  # noqa: BLE001 - TVM raises several types for a bad target
        raise BackendOptionError(f"option 'target'={target!r} is not a valid target: {e}") from e
    kwargs: dict[str, Any] = {"target": target}
    if "tuned" in options:
        tuned = options["tuned"]
        if isinstance(tuned, (str, os.PathLike)) and str(tuned) not in ("auto", "none") \
                and not os.path.isdir(tuned):
            raise BackendOptionError(f"option 'tuned'={str(tuned)!r}: expected None, 'auto', a tuning "
                                     f"database folder or a Database object; no such folder")
        if isinstance(tuned, (bool, int, float)):
            raise BackendOptionError(f"option 'tuned'={tuned!r}: expected None, 'auto', a tuning database "
                                     f"folder or a Database object")
        kwargs["tuned"] = None if tuned == "none" else tuned
    debug = options.get("debug", False)
    if not isinstance(debug, bool):
        raise BackendOptionError(f"option 'debug'={debug!r}: expected True or False")
    return _Options(target=target, compile_kwargs=kwargs, debug=debug or os.environ.get(DEBUG_ENV) == "1")


# ---------------------------------------------------------------------------------------------- records
def _is_compiled_kind(m: nn.Module) -> bool:
    """True for the layers this backend exists for: shift layers and adder layers."""
    return is_shift_layer(m) or isinstance(m, AdderLayer)


def _named_compiled_kind(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` for every shift and adder layer of ``model``, in ``named_modules`` order."""
    return [(name, m) for name, m in model.named_modules() if _is_compiled_kind(m)]


@dataclasses.dataclass
class GraphRecord:
    """What the backend did with one graph dynamo handed over.

    Attributes:
        index: running number of graphs seen by the backend in this process.
        frame: the traced function (``forward``, or dynamo's resume function after a graph break).
        status: ``"compiled"``, ``"eager"`` (fell back, see ``reason``) or ``"pytorch"`` (no shift or
            adder layer).
        reason: why it runs in eager / is left to PyTorch ("" when compiled).
        graph_break: when dynamo ended this graph at a graph break: its reason and the user's source line.
        ops: number of op nodes in dynamo's graph.
        layers: the shift and adder layers in the graph (weak references to the modules).
        shapes: the input shapes compiled (one entry per specialisation).
    """

    index: int
    frame: str
    status: str
    reason: str
    graph_break: str | None
    ops: int
    layers: list[weakref.ReferenceType] = dataclasses.field(default_factory=list)
    shapes: list[list[tuple[int, ...]]] = dataclasses.field(default_factory=list)
    modules: list[weakref.ReferenceType] = dataclasses.field(default_factory=list, repr=False)

    def summary(self) -> str:
        """One line (plus the graph break, if any) for logs and the report."""
        what = {"compiled": "compiled by shiftcomp", "eager": "eager PyTorch (fallback)",
                "pytorch": "left to PyTorch"}[self.status]
        line = f"graph {self.index} ({self.frame}, {self.ops} ops, {len(self.layers)} shift/adder layers): {what}"
        if self.reason:
            line += f": {self.reason}"
        if self.graph_break:
            line += f"\n    ends at a graph break: {self.graph_break}"
        return line


_RECORDS: list[GraphRecord] = []
_WARNED: set[str] = set()


def reset() -> None:
    """Forget every graph record (``torch._dynamo.reset()`` calls this through the backend's ``reset``)."""
    _RECORDS.clear()


@dataclasses.dataclass(frozen=True)
class LayerStatus:
    """Where one shift or adder layer ran: ``status`` ``"compiled"`` or ``"eager"``, and ``reason`` for eager."""

    name: str
    status: str
    reason: str


@dataclasses.dataclass
class DynamoReport:
    """:func:`dynamo_report`'s answer: per shift/adder layer and per graph, what ran compiled and what in eager.

    Attributes:
        layers: every shift and adder layer of the model, in module order.
        graphs: the graphs dynamo handed over that belong to this model, in compile order.
        graph_breaks: the graph breaks dynamo made (reason and user source line), in order.
    """

    layers: list[LayerStatus]
    graphs: list[GraphRecord]
    graph_breaks: list[str]

    @property
    def compiled_layers(self) -> list[str]:
        """Names of the shift and adder layers that run compiled."""
        return [ly.name for ly in self.layers if ly.status == "compiled"]

    @property
    def eager_layers(self) -> dict[str, str]:
        """Shift and adder layers that run in eager PyTorch, with the reason."""
        return {ly.name: ly.reason for ly in self.layers if ly.status == "eager"}

    def __str__(self) -> str:
        n = len(self.compiled_layers)
        lines = [f"shiftcomp dynamo report: {n}/{len(self.layers)} shift/adder layers compiled, "
                 f"{len(self.graphs)} graph(s), {len(self.graph_breaks)} graph break(s)"]
        lines += ["graphs:"] + ["  " + g.summary().replace("\n", "\n  ") for g in self.graphs]
        lines += ["shift/adder layers:"]
        for ly in self.layers:
            lines.append(f"  {ly.name:<28} {ly.status}" + (f"  ({ly.reason})" if ly.reason else ""))
        return "\n".join(lines)


def dynamo_report(compiled_model: nn.Module) -> DynamoReport:
    """What ``torch.compile(model, backend="shiftcomp")`` did with ``model`` so far.

    Args:
        compiled_model: the module ``torch.compile`` returned (or the original model).

    Graphs are compiled on first call, so call the compiled model at least once first. A shift or adder layer that
    appears in no graph ran outside dynamo (a skipped frame) or was not called yet.
    """
    model = getattr(compiled_model, "_orig_mod", compiled_model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"dynamo_report expects the module torch.compile returned, got {type(model).__name__}")
    names = {id(m): name for name, m in model.named_modules()}
    graphs = [g for g in _RECORDS if any(r() is not None and id(r()) in names for r in g.modules)]
    latest: dict[int, GraphRecord] = {}
    for g in graphs:
        for r in g.layers:
            if r() is not None:
                latest[id(r())] = g
    layers = []
    for name, m in _named_compiled_kind(model):
        g = latest.get(id(m))
        if g is None:
            layers.append(LayerStatus(name, "eager", "in no graph dynamo compiled (not called yet, or its "
                                                     "frame was skipped by dynamo)"))
        elif g.status == "compiled":
            layers.append(LayerStatus(name, "compiled", ""))
        else:
            layers.append(LayerStatus(name, "eager", f"graph {g.index}: {g.reason}"))
    breaks = [g.graph_break for g in graphs if g.graph_break]
    return DynamoReport(layers=layers, graphs=graphs, graph_breaks=breaks)


# ---------------------------------------------------------------------------------------------- rebuild
class _Fallback(Exception):
    """This graph runs in eager PyTorch; the message says why."""


def _frame_scopes() -> dict[str, dict[str, Any]]:
    """The locals (``L``) and globals (``G``) of the frame dynamo is compiling (module paths start there)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
        return {"L": dict(tx.f_locals), "G": tx.f_globals}
    except Exception as e:  # noqa: BLE001 - a torch internal; without it the graph runs in eager
        raise _Fallback(f"cannot read the traced frame's variables to find the modules ({e})") from e


_PATH = re.compile(r"^([LG])\[(['\"])(.+?)\2\](.*)$")


def _resolve_module(path: str, scopes: dict[str, dict[str, Any]]) -> tuple[nn.Module, str]:
    """(module, name) for an ``nn_module_stack`` path such as ``L['self'].layer1[0].conv1``."""
    m = _PATH.match(path)
    if m is None:
        raise _Fallback(f"cannot resolve module path {path!r}")
    scope, _, var, rest = m.groups()
    obj = scopes[scope].get(var)
    rest = re.sub(r"\[(['\"]?)([^\]'\"]+)\1\]", r".\2", rest).lstrip(".")
    try:
        obj = getattr(obj, "_orig_mod", obj)
        if rest:
            obj = obj.get_submodule(rest)
    except Exception as e:  # noqa: BLE001
        raise _Fallback(f"cannot resolve module path {path!r}: {e}") from e
    if not isinstance(obj, nn.Module):
        raise _Fallback(f"module path {path!r} is not an nn.Module")
    name = rest if (scope, var) == ("L", "self") else ".".join(p for p in (var, rest) if p)
    return obj, name or "self"


@dataclasses.dataclass
class _Region:
    """The nodes of one call to a leaf module."""

    module: nn.Module
    name: str
    nodes: list[fx.Node] = dataclasses.field(default_factory=list)
    input: fx.Node | None = None
    output: fx.Node | None = None


def _is_scalar_like(v: Any) -> bool:
    if isinstance(v, (bool, int, float, type(None), torch.SymInt, torch.SymFloat, torch.SymBool)):
        return True
    if isinstance(v, (tuple, list, torch.Size)):
        return all(_is_scalar_like(a) for a in v)
    return False


@dataclasses.dataclass
class _Plan:
    """How dynamo's graph maps to a graph :func:`shiftcomp.compile` can take."""

    regions: dict[str, _Region]
    region_of: dict[fx.Node, _Region]
    tensor_consts: dict[fx.Node, torch.Tensor]     # placeholders that are parameters / buffers
    layers: list[nn.Module]                         # the shift and adder layers, in graph order
    training: list[str]


def _plan(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> _Plan:
    from shiftcomp.frontend import ShiftTracer

    scopes = _frame_scopes()
    tracer = ShiftTracer()
    resolved: dict[str, tuple[nn.Module, str]] = {}
    regions: dict[str, _Region] = {}
    region_of: dict[fx.Node, _Region] = {}
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method", "call_module", "get_attr"):
            continue
        for key, entry in (node.meta.get("nn_module_stack") or {}).items():
            path = entry[0]
            if path not in resolved:
                resolved[path] = _resolve_module(path, scopes)
            module, name = resolved[path]
            if tracer.is_leaf_module(module, name):
                region = regions.setdefault(key, _Region(module, name))
                region.nodes.append(node)
                region_of[node] = region
                break
    # parameters and buffers of every module seen become constants of the rebuilt graph
    owned = {id(t): t for m, _ in resolved.values() for t in list(m.parameters()) + list(m.buffers())}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    tensor_consts = {n: v for n, v in zip(placeholders, example_inputs)
                     if isinstance(v, torch.Tensor) and (id(v) in owned or isinstance(v, nn.Parameter))}
    for region in regions.values():
        inside = set(region.nodes)
        ins: list[fx.Node] = []
        for node in region.nodes:
            for a in node.all_input_nodes:
                if a in inside or a in tensor_consts or a.op == "get_attr" or a in ins:
                    continue
                val = a.meta.get("example_value")
                if val is not None and not isinstance(val, torch.Tensor):
                    continue                       # a size computed outside: the module recomputes it
                ins.append(a)
        outs = [n for n in region.nodes if any(u not in inside for u in n.users)]
        if len(ins) != 1 or len(outs) != 1:
            raise _Fallback(f"the call of {type(region.module).__name__} {region.name!r} has {len(ins)} "
                            f"tensor input(s) and {len(outs)} output(s) in this graph (one of each is "
                            f"needed; a graph break inside the layer, or a multi-input module)")
        region.input, region.output = ins[0], outs[0]
    layers = []
    for region in regions.values():
        if _is_compiled_kind(region.module) and all(region.module is not m for m in layers):
            layers.append(region.module)
    training = sorted({r.name for r in regions.values() if r.module.training})
    return _Plan(regions, region_of, tensor_consts, layers, training)


def _concrete_values(gm: fx.GraphModule, args: Sequence[Any]) -> dict[fx.Node, Any]:
    """Non-tensor values (sizes) of every node, running the graph once on ``args`` (for dynamic graphs)."""
    values: dict[fx.Node, Any] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            v = super().run_node(n)
            if _is_scalar_like(v):
                values[n] = v
            return v

    with torch.no_grad():
        _Recorder(gm).run(*args)
    return values


def _rebuild(gm: fx.GraphModule, plan: _Plan, args: Sequence[Any]) -> tuple[fx.GraphModule, list[int]]:
    """The graph ``shiftcomp.compile`` takes, and the positions of its inputs among dynamo's arguments."""
    dynamic = any(not isinstance(a, torch.Tensor) for a in args)
    concrete = _concrete_values(gm, args) if dynamic else {}
    graph = fx.Graph()
    attrs: dict[str, Any] = {}
    env: dict[fx.Node, Any] = {}
    inputs: list[int] = []
    consts: dict[fx.Node, fx.Node] = {}

    def arg(n: fx.Node) -> Any:
        if n in plan.tensor_consts:
            if n not in consts:
                name = "_const_" + re.sub(r"\W", "_", n.name)
                attrs[name] = plan.tensor_consts[n]
                consts[n] = graph.get_attr(name)
            return consts[n]
        if n not in env:
            raise _Fallback(f"node {n.name!r} is used outside the module call that computes it")
        return env[n]

    index = 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            value = args[index]
            index += 1
            if node in plan.tensor_consts:
                continue
            if isinstance(value, torch.Tensor):
                env[node] = graph.placeholder(node.name)
                inputs.append(index - 1)
            else:
                env[node] = value                  # a dynamic size: specialised to this call's value
        elif node.op == "output":
            graph.output(fx.node.map_arg(node.args[0], arg))
        elif node in plan.region_of:
            region = plan.region_of[node]
            if node is region.output:
                owner = attrs.setdefault(region.name, region.module)
                if owner is not region.module:
                    raise _Fallback(f"two modules are both named {region.name!r}")
                env[node] = graph.call_module(region.name, (arg(region.input),))
        elif node in concrete:
            env[node] = concrete[node]
        else:
            env[node] = graph.create_node(node.op, node.target, fx.node.map_arg(node.args, arg),
                                          fx.node.map_arg(node.kwargs, arg), name=node.name)
    rebuilt = fx.GraphModule(attrs, graph, class_name="DynamoGraph")
    rebuilt.graph.eliminate_dead_code()           # the size computations the leaf modules now do themselves
    rebuilt.recompile()
    return rebuilt, inputs


# ---------------------------------------------------------------------------------------------- runtime
class _CompiledGraph:
    """Dynamo's compiled callable for one graph: shiftcomp builds per input signature, eager fallback."""

    def __init__(self, gm: fx.GraphModule, plan: _Plan, opts: _Options, record: GraphRecord) -> None:
        self.gm, self.plan, self.opts, self.record = gm, plan, opts, record
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        self.tuple_out = isinstance(out, (tuple, list))
        self.dynamic = any(n.op == "placeholder" and not isinstance(n.meta.get("example_value"), torch.Tensor)
                           for n in gm.graph.nodes)
        self.builds: dict[Any, tuple[Callable[..., Any], list[int]] | None] = {}
        self.static_build: tuple[Callable[..., Any], list[int]] | None = None

    def _key(self, args: Sequence[Any]) -> Any:
        return tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args)

    def build(self, args: Sequence[Any]) -> tuple[Callable[..., Any], list[int]] | None:
        """Compile for these arguments' shapes; on any failure record the reason and return None (eager)."""
        import shiftcomp

        try:
            rebuilt, inputs = _rebuild(self.gm, self.plan, args)
            acts = [args[i] for i in inputs]
            compiled = shiftcomp.compile(rebuilt, acts, **self.opts.compile_kwargs)
        except Exception as e:  # noqa: BLE001 - never an exception inside torch.compile: run eager
            self.record.status = "eager"
            self.record.reason = _short_reason(e, self.gm)
            return None
        self.record.status, self.record.reason = "compiled", ""
        self.record.shapes.append([tuple(args[i].shape) for i in inputs])
        return compiled, inputs

    def __call__(self, *args: Any) -> Any:
        if self.dynamic:
            key = self._key(args)
            if key not in self.builds:
                self.builds[key] = self.build(args)
                _debug_print(self.record, self.opts)
            build = self.builds[key]
        else:
            build = self.static_build
        if build is None:
            return self.gm(*args)
        compiled, inputs = build
        out = compiled(*[args[i] for i in inputs])
        if self.tuple_out and not isinstance(out, tuple):
            out = (out,)
        return out


def _short_reason(e: BaseException, gm: fx.GraphModule) -> str:
    from shiftcomp.errors import UnsupportedOpError
    from shiftcomp.frontend import node_location

    if isinstance(e, UnsupportedOpError):
        # the rebuilt graph keeps dynamo's node names; dynamo's node knows the user's source line
        m = re.match(r"fx node '([^']+)'", e.location)
        node = next((n for n in gm.graph.nodes if m and n.name == m.group(1)), None)
        return f"unsupported op {e.op!r} at {node_location(node) if node is not None else e.location}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def _debug_print(record: GraphRecord, opts: _Options) -> None:
    if opts.debug:
        print("[shiftcomp.dynamo] " + record.summary(), file=sys.stderr)


def _graph_break(gm: fx.GraphModule) -> str | None:
    reason = getattr(gm, "compile_subgraph_reason", None)
    if reason is None or not getattr(reason, "graph_break", False):
        return None
    where = ""
    stack = getattr(reason, "user_stack", None) or []
    if stack:
        f = stack[-1]
        where = f" at {f.filename}:{f.lineno} in {f.name}"
        if f.line:
            where += f": {f.line.strip()}"
    text = " ".join(str(reason.reason).split())
    if text.startswith("generic_jump"):
        text = f"Python branch on a tensor value ({text})"
    return f"{text[:300]}{where}"


def _frame() -> tuple[str, list[weakref.ReferenceType]]:
    """A label for the traced frame, and the modules among its locals (to attribute the graph to a model)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
        owner = tx.f_locals.get("self")
        prefix = f"{type(owner).__name__}." if isinstance(owner, nn.Module) else ""
        mods = [weakref.ref(v) for v in tx.f_locals.values() if isinstance(v, nn.Module)]
        return prefix + tx.f_code.co_name, mods
    except Exception:  # noqa: BLE001 - only a label
        return "?", []


def shiftcomp_backend(gm: fx.GraphModule, example_inputs: list[Any], options: Mapping[str, Any] | None = None,
                      mode: str | None = None) -> Callable[..., Any]:
    """The ``"shiftcomp"`` TorchDynamo backend (see the module docstring); dynamo calls it once per graph.

    Raises:
        BackendOptionError: unknown option key, or a bad ``target`` / ``tuned`` / ``debug`` value.
    """
    opts = _parse_options(options, mode)
    frame, owners = _frame()
    record = GraphRecord(index=len(_RECORDS), frame=frame, status="pytorch", reason="",
                         graph_break=_graph_break(gm), ops=sum(n.op.startswith("call") for n in gm.graph.nodes),
                         modules=owners)
    _RECORDS.append(record)
    try:
        plan = _plan(gm, example_inputs)
    except _Fallback as e:
        record.status, record.reason = "eager", str(e)
        _debug_print(record, opts)
        return gm.forward
    record.layers = [weakref.ref(m) for m in plan.layers]
    record.modules += [weakref.ref(r.module) for r in plan.regions.values()]
    if not plan.layers:
        record.reason = "no shift or adder layers in this graph"
        _debug_print(record, opts)
        return gm.forward
    if plan.training:
        record.status = "eager"
        record.reason = f"training mode ({plan.training[0]}{', ...' if len(plan.training) > 1 else ''})"
        if "training" not in _WARNED:
            _WARNED.add("training")
            warnings.warn("torch.compile(backend='shiftcomp') compiles for inference only: a graph with "
                          "modules in training mode runs unchanged in PyTorch (call model.eval() first)",
                          stacklevel=2)
        _debug_print(record, opts)
        return gm.forward
    runner = _CompiledGraph(gm, plan, opts, record)
    if not runner.dynamic:
        runner.static_build = runner.build(example_inputs)
        _debug_print(record, opts)
    return runner


shiftcomp_backend.reset = reset  # type: ignore[attr-defined]  # called by torch._dynamo.reset()
