"""Fused elementwise epilogues: what follows a shift layer in the model, applied in the kernel's own store.

A conv layer is usually followed by BatchNorm (folded into a per-channel multiply and add), sometimes a
residual add, then ReLU or ReLU6. Run as separate kernels, each of those reads and writes the whole float32
activation tensor again. An :class:`Epilogue` lists them as steps; a kernel that supports epilogues
(:mod:`schedules.sum_then_shift`) applies the steps to each output value right after its own scale and
bias, and stores the result once::

    out[n, o, h, w] = steps(float32(acc) * 2**(s0 - F) [+ bias[o]])

Operands of a step:

* ``"channel"``: row ``index`` of a ``(K, O)`` float32 table, read at the output channel ``o`` (BatchNorm's
  scale and shift; a Relax constant of shape ``(O, 1, 1)`` or ``(1, O, 1, 1)``); the table may end with
  one row of ``-0.0`` (:attr:`Epilogue.table_rows`);
* ``"scalar"``: ``value`` (a float32 constant, embedded);
* ``"tensor"``: a float32 tensor of the output's shape, read at the same index (the residual);
* ``"none"``: unary steps (``relu``; ``clip`` between ``value`` and ``value2``).

Numerics: each step is the expression TVM's own legalisation of the Relax op computes (``a * b``, ``a + b``,
``a - b``, ``max(x, 0)``, ``max(min(x, hi), lo)``), in the same order, in float32, each rounded on its own
(no FMA across steps, see :attr:`Epilogue.table_rows`), so the fused kernel gives the same bits as the
unfused kernels (``tests/passes/test_fuse_epilogue.py``). One caveat of the unfused side: TVM keeps a glue
kernel's intermediate tensor on the stack when it is smaller than 1 KiB, and there LLVM may fuse a
multiply and the next add into an FMA after all, so for tiny tensors the two can differ by 1 ulp. Multiplies here are float
glue (BatchNorm's scale), counted by the audit as the shift kernel's epilogue, not its data path.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple

from tvm import tirx

__all__ = ["EpilogueStep", "Epilogue", "STEP_OPS", "OPERANDS", "UNARY_OPS"]

_F32 = "float32"


def _f32(v: float) -> tirx.PrimExpr:
    return tirx.const(float(v), _F32)


#: step op -> ``(value, operand, step) -> value``; the expressions of TVM's legalised Relax ops
STEP_OPS: dict[str, Callable[[Any, Any, "EpilogueStep"], Any]] = {
    "mul": lambda v, o, s: v * o,
    "add": lambda v, o, s: v + o,
    "sub": lambda v, o, s: v - o,          # value - operand
    "rsub": lambda v, o, s: o - v,         # operand - value
    "relu": lambda v, o, s: tirx.max(v, _f32(0.0)),
    "clip": lambda v, o, s: tirx.max(tirx.min(v, _f32(s.value2)), _f32(s.value)),
}
OPERANDS = ("channel", "scalar", "tensor", "none")
UNARY_OPS = ("relu", "clip")   #: steps without an operand
_ADDS = ("add", "sub", "rsub")


@dataclasses.dataclass(frozen=True)
class EpilogueStep:
    """One elementwise step (see the module doc).

    Attributes:
        op: a key of :data:`STEP_OPS`.
        operand: one of :data:`OPERANDS` (``"none"`` for ``relu`` and ``clip``).
        index: the channel table row, for ``operand="channel"``.
        value: the scalar operand; ``clip``'s lower bound.
        value2: ``clip``'s upper bound.
    """

    op: str
    operand: str = "none"
    index: int = 0
    value: float = 0.0
    value2: float = 0.0

    def __post_init__(self) -> None:
        if self.op not in STEP_OPS:
            raise ValueError(f"unknown epilogue op {self.op!r}; expected one of {sorted(STEP_OPS)}")
        if self.operand not in OPERANDS:
            raise ValueError(f"unknown epilogue operand {self.operand!r}; expected one of {OPERANDS}")
        if (self.op in UNARY_OPS) != (self.operand == "none"):
            raise ValueError(f"epilogue op {self.op!r} with operand {self.operand!r}: relu/clip take none, "
                             f"the binary ops take channel, scalar or tensor")


@dataclasses.dataclass(frozen=True)
class Epilogue:
    """The steps after a kernel's scale and bias, in order (empty: the plain kernel)."""

    steps: Tuple[EpilogueStep, ...] = ()

    def __post_init__(self) -> None:
        rows = sorted(s.index for s in self.steps if s.operand == "channel")
        if rows != list(range(len(rows))):
            raise ValueError(f"channel steps must use table rows 0..K-1 once each, got {rows}")
        if sum(s.operand == "tensor" for s in self.steps) > 1:
            raise ValueError("an epilogue reads at most one tensor operand")

    @property
    def channel_rows(self) -> int:
        """Rows ``K`` of the ``(K, O)`` channel table the kernel reads (0: no table)."""
        return sum(s.operand == "channel" for s in self.steps)

    @property
    def has_tensor(self) -> bool:
        """Whether the kernel reads a tensor operand of the output's shape."""
        return any(s.operand == "tensor" for s in self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def needs_fence(self) -> bool:
        """Whether a multiply step is followed by an add or subtract (see :attr:`table_rows`)."""
        return any(a.op == "mul" and b.op in _ADDS for a, b in zip(self.steps, self.steps[1:]))

    @property
    def table_rows(self) -> int:
        """Rows of the channel table: the channel operands, then (with :attr:`needs_fence`) one row of
        ``-0.0``. Adding ``-0.0`` read from memory is an exact identity that LLVM cannot fold, placed
        between a multiply and the next add: LLVM would otherwise fuse the two into one FMA (one rounding),
        which the unfused kernels (one op per kernel) never do; an FMA with the ``-0.0`` is the plain
        product."""
        return self.channel_rows + int(self.needs_fence)

    def apply(self, value: Any, table: Optional[Any], tensor: Optional[Any], channel: Any,
              index: Sequence[Any]) -> Any:
        """``value`` after every step: ``table[row, channel]`` for channel operands, ``tensor[index]`` for the
        tensor operand (TIR buffers; either may be None when no step reads it)."""
        prev = None
        for s in self.steps:
            if prev == "mul" and s.op in _ADDS:
                value = value + table[self.channel_rows, channel]
            prev = s.op
            if s.operand == "channel":
                operand = table[s.index, channel]
            elif s.operand == "tensor":
                operand = tensor[tuple(index)]
            elif s.operand == "scalar":
                operand = _f32(s.value)
            else:
                operand = None
            value = STEP_OPS[s.op](value, operand, s)
        return value
