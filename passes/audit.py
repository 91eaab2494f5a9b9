"""Multiplication audit: per-inference arithmetic counts of the lowered IR, by role (docs/numerics.md, Shift layer).

Run on the module after ``legalize_passes`` (every Relax op is then one ``call_tir`` of a TIR PrimFunc;
fusion only merges those afterwards and does not change the arithmetic). For every PrimFunc reached from
``main`` (``call_tir``, also inside called Relax functions) it counts each arithmetic node of the TIR,
weighted by the extents of the loops around it (= executions per call; block predicates of non-divisible
splits are ignored, so a tail can be over-counted) and by its lanes when it is an explicit vector expression
(a broadcast scalar operand counts once), times the number of calls per inference. A
subexpression that occurs several times in one statement (TE inlining repeats them; LLVM computes them
once) is counted once.

Every operation lands in one bucket:

* **data-path** (``role="shift"`` kernels, reduction blocks and integer blocks): must contain no multiply.
* **epilogue** (``role="shift"`` kernels, float non-reduction blocks; in kernels written as plain loops,
  e.g. sum-then-shift, a float store outside any reduction block): the per-output scale
  ``float32(acc) * 2**(s0 - F)`` and the bias add, and the glue fused into the kernel
  (``passes.fuse_epilogue``: BatchNorm's multiply and add, a residual add, ReLU).
* **prologue** (``role="prologue"``: the quantise kernel): ``x * 2**F`` per activation element.
* **elsewhere** (every other PrimFunc: unfused BatchNorm, pooling, residual adds, float layers, the float
  baseline's conv/matmul).
* **index** (in any kernel): arithmetic that does not depend on any loaded value (buffer indices, loop
  bounds, padding conditions) -- address computation, not counted as data.

Op classes: ``mul``, ``add`` (add/sub), ``shift``, ``select``, ``bitwise``, ``cast``, ``minmax``, ``div``
(div/mod), ``cmp`` (compares and logic), ``call`` (other intrinsics: nearbyint, floor, exp, clz, ...).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from typing import Any

import tvm
import tvm.s_tir as s_tir
import tvm_ffi
import tvm.tirx as T
from tvm import relax

from .quantize_kernel import ROLE_ATTR

__all__ = ["OpCounts", "KernelAudit", "MultiplicationAudit", "audit_module", "count_primfunc", "OP_CLASSES"]

#: kernel roles whose data path must be multiplication-free (shift kernels; adder kernels, passes/lower_adder.py)
DATAPATH_ROLES = ("shift", "adder")
OP_CLASSES = ("mul", "add", "shift", "select", "bitwise", "cast", "minmax", "div", "cmp", "call", "fmul", "fadd")


@dataclasses.dataclass
class OpCounts:
    """Weighted operation counts (executions per inference) by op class.

    ``mul``/``add`` count every multiply / add-or-subtract; ``fmul``/``fadd`` are the floating-point
    subset of them (so integer adds are ``add - fadd``).
    """

    mul: int = 0
    add: int = 0
    shift: int = 0
    select: int = 0
    bitwise: int = 0
    cast: int = 0
    minmax: int = 0
    div: int = 0
    cmp: int = 0
    call: int = 0
    fmul: int = 0
    fadd: int = 0

    def __add__(self, other: "OpCounts") -> "OpCounts":
        return OpCounts(**{k: getattr(self, k) + getattr(other, k) for k in OP_CLASSES})

    def scaled(self, factor: int) -> "OpCounts":
        """Every count times ``factor``."""
        return OpCounts(**{k: getattr(self, k) * factor for k in OP_CLASSES})

    def total(self) -> int:
        """Sum over all op classes."""
        return sum(getattr(self, k) for k in OP_CLASSES)

    def as_dict(self) -> dict[str, int]:
        """``{op_class: count}``."""
        return {k: getattr(self, k) for k in OP_CLASSES}


@dataclasses.dataclass
class KernelAudit:
    """Counts of one PrimFunc, per inference (already multiplied by ``calls``).

    Attributes:
        name: the PrimFunc's global name.
        role: ``"shift"``, ``"prologue"`` or ``"other"``.
        layer: the shift layer (shift kernels and prologues when known), else ``None``.
        calls: calls per inference.
        data: data-path (shift kernels) or all data arithmetic (other roles).
        epilogue: shift kernels' float epilogue (zero for other roles).
        index: index arithmetic.
    """

    name: str
    role: str
    layer: str | None
    calls: int
    data: OpCounts
    epilogue: OpCounts
    index: OpCounts


@dataclasses.dataclass
class MultiplicationAudit:
    """The audit of a whole module: one :class:`KernelAudit` per PrimFunc reached from ``main``."""

    kernels: list[KernelAudit]

    def _sum(self, roles: Iterable[str], part: str) -> OpCounts:
        out = OpCounts()
        for k in self.kernels:
            if k.role in roles:
                out = out + getattr(k, part)
        return out

    @property
    def datapath(self) -> OpCounts:
        """Data-path ops of all shift (and adder) kernels."""
        return self._sum(DATAPATH_ROLES, "data")

    @property
    def epilogue(self) -> OpCounts:
        """Epilogue ops of all shift (and adder) kernels."""
        return self._sum(DATAPATH_ROLES, "epilogue")

    @property
    def prologue(self) -> OpCounts:
        """Ops of the quantise prologues."""
        return self._sum(("prologue",), "data")

    @property
    def elsewhere(self) -> OpCounts:
        """Ops outside shift kernels and prologues (float glue, float layers, the float baseline)."""
        return self._sum(("other",), "data")

    @property
    def index(self) -> OpCounts:
        """Index arithmetic in all kernels."""
        return self._sum(DATAPATH_ROLES + ("prologue", "other"), "index")

    @property
    def datapath_multiplies(self) -> int:
        """Multiplies inside shift kernels' data path (must be 0)."""
        return self.datapath.mul

    @property
    def epilogue_multiplies(self) -> int:
        """Per-output scale multiplies of the shift kernels."""
        return self.epilogue.mul

    @property
    def prologue_multiplies(self) -> int:
        """``x * 2**F`` multiplies of the quantise prologues."""
        return self.prologue.mul

    @property
    def other_multiplies(self) -> int:
        """Multiplies elsewhere (float ops)."""
        return self.elsewhere.mul

    @property
    def shift_kernels(self) -> list[KernelAudit]:
        """The shift kernels' audits."""
        return [k for k in self.kernels if k.role == "shift"]

    def energy_counts(self) -> dict[str, int]:
        """Per-inference counts of the shift layers' arithmetic in ``shiftcomp.energy``'s op kinds.

        Scope: shift kernels (data path + epilogue) and quantise prologues -- the conv/linear arithmetic
        the energy model compares; float glue (BatchNorm, ...) is left out, as there, unless it was fused
        into a kernel's epilogue (``passes.fuse_epilogue``: then its ops are the kernel's). Mapping: integer
        add/sub -> ``int32_add``, shifts -> ``int32_shift``, xor/and/or, selects, compares, min/max and
        other intrinsics on integers -> ``int32_logic``, integer multiplies -> ``int32_mul`` (0 in a
        correct build); float multiplies -> ``fp32_mul``; float adds, and the prologue's round and clamp,
        -> ``fp32_add``. Casts are free. (int64 accumulators are counted as int32 ops.)
        """
        out = {"int32_add": 0, "int32_shift": 0, "int32_logic": 0, "int32_mul": 0, "fp32_mul": 0, "fp32_add": 0}
        for part in (self.datapath, self.epilogue):
            out["int32_add"] += part.add - part.fadd
            out["int32_mul"] += part.mul - part.fmul
            out["int32_shift"] += part.shift
            out["int32_logic"] += part.bitwise + part.select + part.cmp + part.minmax + part.call + part.div
            out["fp32_mul"] += part.fmul
            out["fp32_add"] += part.fadd
        pro = self.prologue
        out["fp32_mul"] += pro.fmul
        out["fp32_add"] += pro.fadd + pro.minmax + pro.call
        return out

    def totals(self) -> dict[str, dict[str, int]]:
        """``{"datapath"|"epilogue"|"prologue"|"elsewhere"|"index": {op_class: count}}``."""
        return {p: getattr(self, p).as_dict() for p in ("datapath", "epilogue", "prologue", "elsewhere", "index")}

    def __str__(self) -> str:
        head = (f"{'kernel':<34} {'role':<8} {'calls':>5} {'data mul':>12} {'data add':>12} "
                f"{'data shift':>12} {'epi mul':>10} {'index mul':>12}")
        lines = ["Multiplication audit (operation counts per inference)", head, "-" * len(head)]
        rows: list[KernelAudit] = sorted((k for k in self.kernels if k.role != "other"),
                                         key=lambda k: (k.role != "shift", k.name))
        groups: dict[str, KernelAudit] = {}  # other kernels, grouped by op name (tir_clip3 -> tir_clip)
        for k in self.kernels:
            if k.role == "other":
                base = re.sub(r"\d+$", "", k.name)
                g = groups.setdefault(base, KernelAudit(base, "other", None, 0, OpCounts(), OpCounts(), OpCounts()))
                g.calls += k.calls
                g.data, g.epilogue, g.index = g.data + k.data, g.epilogue + k.epilogue, g.index + k.index
        for k in rows + sorted(groups.values(), key=lambda k: -k.data.total()):
            lines.append(f"{k.name[:34]:<34} {k.role:<8} {k.calls:>5} {k.data.mul:>12,} {k.data.add:>12,} "
                         f"{k.data.shift:>12,} {k.epilogue.mul:>10,} {k.index.mul:>12,}")
        lines.append("-" * len(head))
        d = self.datapath
        lines += [
            f"data-path multiplies in shift kernels : {self.datapath_multiplies:,}",
            f"epilogue multiplies (per-output scale): {self.epilogue_multiplies:,}",
            f"prologue multiplies (x * 2**F)        : {self.prologue_multiplies:,}",
            f"multiplies elsewhere (float ops)      : {self.other_multiplies:,}",
            f"index multiplies (address arithmetic) : {self.index.mul:,}",
            f"shift-kernel data path: adds {d.add:,}, shifts {d.shift:,}, selects {d.select:,}, "
            f"bitwise {d.bitwise:,}, casts {d.cast:,}",
        ]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- TIR counting
_BIN = {
    T.Mul: "mul", T.Add: "add", T.Sub: "add", T.LShift: "shift", T.RShift: "shift",
    T.BitwiseAnd: "bitwise", T.BitwiseOr: "bitwise", T.BitwiseXor: "bitwise",
    T.Min: "minmax", T.Max: "minmax", T.Div: "div", T.Mod: "div", T.FloorDiv: "div", T.FloorMod: "div",
    T.EQ: "cmp", T.NE: "cmp", T.LT: "cmp", T.LE: "cmp", T.GT: "cmp", T.GE: "cmp", T.And: "cmp", T.Or: "cmp",
}
_CALL_CLASS = {
    "tirx.shift_left": "shift", "tirx.shift_right": "shift", "tirx.if_then_else": "select",
    "tirx.bitwise_and": "bitwise", "tirx.bitwise_or": "bitwise", "tirx.bitwise_xor": "bitwise",
    "tirx.bitwise_not": "bitwise", "tirx.reinterpret": "cast",
}
_FREE_CALLS = {"tirx.likely", "tirx.assume"}
_LOAD = tvm.ir.expr.TensorLoad  # what a TIR BufferLoad is in TVM 0.27


class _Counter:
    """Counts one PrimFunc's arithmetic into ``{"data"|"epilogue"|"index": OpCounts}`` (see module doc)."""

    def __init__(self, is_shift: bool) -> None:
        self.is_shift = is_shift
        self.parts = {"data": OpCounts(), "epilogue": OpCounts(), "index": OpCounts()}
        self.data_vars: set[Any] = set()
        self.loops: list[tuple[Any, int]] = []
        self.approximate = False
        self.seen: dict[int, bool] = {}  # structural hash -> depends on data, within the current statement
        self.reductions = 0  # enclosing reduction blocks

    def _add(self, part: str, cls: str, w: int) -> None:
        c = self.parts[part]
        setattr(c, cls, getattr(c, cls) + w)

    # expressions: returns True when the value depends on loaded data
    def expr(self, e: Any, w: int, part: str) -> bool:
        if e is None or isinstance(e, (T.IntImm, T.FloatImm, int, float, str)) or type(e).__name__ == "StringImm":
            return False
        if isinstance(e, T.Var):
            return e in self.data_vars
        # a subexpression repeated inside one statement (TE inlines, LLVM's CSE computes it once) counts once
        key = tvm_ffi.structural_hash(e)
        if key in self.seen:
            return self.seen[key]
        dep = self._expr(e, w, part)
        self.seen[key] = dep
        return dep

    def _expr(self, e: Any, w: int, part: str) -> bool:
        # an operation on a vector counts once per lane (children weigh their own lanes: a broadcast
        # scalar is computed once)
        if isinstance(e, _LOAD):
            for i in e.indices:
                self.expr(i, w, "index")
            return True
        return self._op(e, w, w * _lanes(e), part)

    def _op(self, e: Any, w: int, lw: int, part: str) -> bool:
        if isinstance(e, _LOAD):
            for i in e.indices:
                self.expr(i, w, "index")
            return True
        if isinstance(e, T.Var):
            return e in self.data_vars
        cls = _BIN.get(type(e))
        if cls is not None:
            dep = self.expr(e.a, w, part) | self.expr(e.b, w, part)
            self._add(part if dep else "index", cls, lw)
            if cls in ("mul", "add") and str(e.ty).startswith(("float", "bfloat")):
                self._add(part if dep else "index", "f" + cls, lw)
            return dep
        if isinstance(e, T.BitwiseNot):
            dep = self.expr(e.a, w, part)
            self._add(part if dep else "index", "bitwise", lw)
            return dep
        if isinstance(e, T.Not):
            dep = self.expr(e.a, w, part)
            self._add(part if dep else "index", "cmp", lw)
            return dep
        if isinstance(e, T.Cast):
            dep = self.expr(e.value, w, part)
            self._add(part if dep else "index", "cast", lw)
            return dep
        if isinstance(e, T.Select):
            dep = self.expr(e.condition, w, part) | self.expr(e.true_value, w, part) | self.expr(
                e.false_value, w, part)
            self._add(part if dep else "index", "select", lw)
            return dep
        if isinstance(e, T.Let):
            dep_v = self.expr(e.value, w, part)
            if dep_v:
                self.data_vars.add(e.var)
            return self.expr(e.body, w, part) or dep_v
        if isinstance(e, (T.Ramp,)):
            self.expr(e.base, w, "index")
            self.expr(e.stride, w, "index")
            return False
        if isinstance(e, T.Broadcast):
            return self.expr(e.value, w, part)
        if isinstance(e, T.Shuffle):
            return any([self.expr(v, w, part) for v in e.vectors])
        if isinstance(e, tvm.ir.expr.Call) or type(e).__name__ == "Call":
            name = str(e.op.name) if hasattr(e.op, "name") else str(e.op)
            dep = False
            for a in e.args:
                dep = self.expr(a, w, part) | dep
            if name not in _FREE_CALLS:
                self._add(part if dep else "index", _CALL_CLASS.get(name, "call"), lw)
            return dep
        # unknown expression node: visit what looks like children
        dep = False
        for attr in ("a", "b", "value", "condition", "args"):
            v = getattr(e, attr, None)
            if isinstance(v, (list, tuple)) or (v is not None and hasattr(v, "__len__") and not isinstance(v, str)):
                try:
                    for x in v:
                        dep = self.expr(x, w, part) | dep
                except TypeError:
                    pass
            elif v is not None:
                dep = self.expr(v, w, part) | dep
        return dep

    # statements
    def stmt(self, s: Any, w: int, part: str) -> None:
        if s is None:
            return
        if isinstance(s, T.SeqStmt):
            for c in s.seq:
                self.stmt(c, w, part)
        elif isinstance(s, T.For):
            self.seen = {}
            self.expr(s.min, w, "index")
            self.expr(s.extent, w, "index")
            if isinstance(s.extent, T.IntImm):
                ext = int(s.extent.value)
            else:
                ext, self.approximate = 1, True
            self.loops.append((s.loop_var, ext))
            self.stmt(s.body, w * ext, part)
            self.loops.pop()
        elif isinstance(s, s_tir.SBlockRealize):
            self.seen = {}
            for v in s.iter_values:
                self.expr(v, w, "index")
            self.expr(s.predicate, w, "index")
            self.block(s, w, part)
        elif isinstance(s, s_tir.SBlock):
            self.stmt(s.init, w, part)
            self.stmt(s.body, w, part)
        elif isinstance(s, T.BufferStore):
            self.seen = {}
            for i in s.indices:
                self.expr(i, w, "index")
            if self.is_shift and part == "data" and not self.reductions \
                    and (str(s.buffer.dtype).startswith(("float", "bfloat")) or _reads_float(s.value)):
                # hand-written loops without blocks: a float store is the epilogue, and so is an integer store
                # computed from floats (an epilogue quantising into the next layer's packed input)
                part = "epilogue"
            self.expr(s.value, w, part)
        elif isinstance(s, T.IfThenElse):
            self.seen = {}
            dep = self.expr(s.condition, w, part)
            if dep:
                self._add(part, "select", w)
            self.stmt(s.then_case, w, part)
            self.stmt(s.else_case, w, part)
        elif isinstance(s, T.Evaluate):
            self.seen = {}
            self.expr(s.value, w, part)
        else:
            value = getattr(s, "value", None)
            var = getattr(s, "var", None)
            if value is not None and not isinstance(s, T.AttrStmt):
                if self.expr(value, w, part) and var is not None:
                    self.data_vars.add(var)
            body = getattr(s, "body", None)
            if body is not None:
                self.stmt(body, w, part)

    def block(self, realize: Any, w: int, part: str) -> None:
        blk = realize.block
        reduce_vars = set()
        for iv, val in zip(blk.iter_vars, realize.iter_values):
            if int(iv.iter_type) == T.IterVar.CommReduce:
                reduce_vars |= _vars_in(val)
        if self.is_shift and part != "index":
            part = "data" if reduce_vars or not _stores_float(blk.body) else "epilogue"
        if blk.init is not None:
            # the init runs once per spatial point: divide out the loops that drive the reduction
            div = math.prod(ext for v, ext in self.loops if v in reduce_vars) or 1
            self.stmt(blk.init, max(w // div, 1), part)
        self.reductions += bool(reduce_vars)
        self.stmt(blk.body, w, part)
        self.reductions -= bool(reduce_vars)


def _vars_in(e: Any) -> set[Any]:
    out: set[Any] = set()

    def rec(x: Any) -> None:
        if isinstance(x, T.Var):
            out.add(x)
        for attr in ("a", "b", "value"):
            v = getattr(x, attr, None)
            if isinstance(v, tvm.ir.expr.Expr):
                rec(v)
        if hasattr(x, "args") and not isinstance(x, T.Var):
            for a in x.args:
                if isinstance(a, tvm.ir.expr.Expr):
                    rec(a)

    rec(e)
    return out


def _reads_float(e: Any) -> bool:
    """Whether the expression ``e`` has a float-typed subexpression (TIR has no Python expression visitor
    here: the operand fields are walked directly)."""
    if not isinstance(e, tvm.ir.expr.Expr) or not hasattr(e, "ty"):
        return False
    if str(e.ty).startswith(("float", "bfloat")):
        return True
    kids = [getattr(e, f, None) for f in ("a", "b", "value", "condition", "true_value", "false_value")]
    kids += list(getattr(e, "args", None) or [])
    return any(_reads_float(k) for k in kids)


def _stores_float(s: Any) -> bool:
    if isinstance(s, T.BufferStore):
        return str(s.buffer.dtype).startswith(("float", "bfloat"))
    if isinstance(s, T.SeqStmt):
        return any(_stores_float(c) for c in s.seq)
    body = getattr(s, "body", None)
    return _stores_float(body) if body is not None else False


def _lanes(e: Any) -> int:
    try:
        return max(1, int(e.ty.dtype.lanes))
    except (AttributeError, TypeError, ValueError):
        return 1


def count_primfunc(prim: T.PrimFunc, is_shift: bool = False) -> dict[str, OpCounts]:
    """Counts of one call of ``prim``: ``{"data", "epilogue", "index"}`` (see module doc)."""
    c = _Counter(is_shift)
    c.stmt(prim.body, 1, "data")
    return c.parts


# ---------------------------------------------------------------------------------------------- Relax walk
def _role(prim: T.PrimFunc) -> tuple[str, str | None]:
    attrs = prim.attrs
    if attrs is not None and ROLE_ATTR in attrs:
        layer = str(attrs["shiftcomp.layer"]) if "shiftcomp.layer" in attrs else None
        return str(attrs[ROLE_ATTR]), layer
    return "other", None


def _calls(mod: tvm.IRModule, func: relax.Function, counts: dict[str, int], seen: set[str]) -> None:
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(e: Any) -> None:
        if isinstance(e, relax.Call):
            if e.op == call_tir and isinstance(e.args[0], tvm.ir.GlobalVar):
                counts[e.args[0].name_hint] = counts.get(e.args[0].name_hint, 0) + 1
            elif isinstance(e.op, tvm.ir.GlobalVar) and e.op in mod.get_global_vars():
                callee = mod[e.op]
                if isinstance(callee, relax.Function):
                    _calls(mod, callee, counts, seen)
                elif isinstance(callee, T.PrimFunc):
                    counts[e.op.name_hint] = counts.get(e.op.name_hint, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)


def audit_module(mod: tvm.IRModule, entry: str = "main") -> MultiplicationAudit:
    """Audit every PrimFunc reached from ``entry`` (see the module docstring)."""
    counts: dict[str, int] = {}
    _calls(mod, mod[entry], counts, set())
    kernels = []
    for name, calls in counts.items():
        prim = mod[name]
        role, layer = _role(prim)
        parts = count_primfunc(prim, is_shift=role in DATAPATH_ROLES)
        kernels.append(KernelAudit(name=name, role=role, layer=layer, calls=calls,
                                   data=parts["data"].scaled(calls), epilogue=parts["epilogue"].scaled(calls),
                                   index=parts["index"].scaled(calls)))
    return MultiplicationAudit(kernels)
