"""Arithmetic-energy estimate for shift networks versus their float32 originals.

The estimate multiplies per-inference operation counts by per-operation energies at the 45 nm node:

======================  ==========  =====================================================================
operation               energy/pJ   source
======================  ==========  =====================================================================
FP32 multiply           3.7         M. Horowitz, "Computing's energy problem (and what we can do about it)",
FP32 add                0.9         ISSCC 2014 (Dig. Tech. Papers, pp. 10-14), energy table, 45 nm, 0.9 V
INT32 add               0.1         (same table)
INT32 multiply          3.1         (same table; listed for completeness, never used by shift layers)
INT32 shift             0.13        the 32-bit barrel-shift figure the shift-add literature quotes beside
                                    Horowitz's table for the same 45 nm node (e.g. ShiftAddNet, You et al.,
                                    NeurIPS 2020, Table 1). Horowitz's slide itself lists adds and
                                    multiplies only.
======================  ==========  =====================================================================

Counting rules (per inference = one forward pass of the given example batch; counts are operations,
energies picojoules):

* float conv / linear: one FP32 multiply and one FP32 add per multiply-accumulate (MAC), plus one FP32
  add per output element when the layer has a bias.
* shift conv / linear (fixed-point activations, docs/numerics.md, Shift layer): per MAC one INT32 variable shift and one
  INT32 add (the sign is applied by choosing add or subtract; the conditional negate ``(v ^ m) - m`` that
  the kernels emit is an XOR plus a subtract, counted as ``int32_logic`` + one extra ``int32_add`` when
  ``count_negate=True``). Per output element: one FP32 multiply (the power-of-two rescale
  ``float32(acc) * 2**(s0 - F)``; an exponent add in hardware, counted pessimistically as a multiply) and
  one FP32 add for the bias. Per input element: one FP32 multiply + round for the quantizer ``x * 2**F``.
* Layers the shift configuration left in float (``depth``) are counted as float layers.
* Everything else (BatchNorm, activations, pooling, residual adds) is identical in both variants and is
  not counted: the estimate compares the conv/linear arithmetic, which dominates.
* Memory traffic is not modelled (Horowitz: a 32-bit DRAM access is ~640 pJ; weight bytes are reported
  separately by the benchmark: 5-bit packed shift weights are 6.4x smaller than float32).

When the multiplication audit (``passes/audit.py``) is available, :func:`audit_energy` turns
its counts into the same report so the analytic numbers can be cross-checked against the compiled module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from shiftcomp.nn import is_shift_layer

#: Energy per operation in picojoules at 45 nm (see the module docstring for sources).
ENERGY_45NM_PJ: dict[str, float] = {
    "fp32_mul": 3.7,
    "fp32_add": 0.9,
    "int32_add": 0.1,
    "int32_mul": 3.1,
    "int32_shift": 0.13,
    # bitwise ops (the XOR of the conditional negate): no figure in Horowitz's table; an INT32 add is an
    # upper bound for a 32-bit XOR (no carry chain), so we charge the add figure.
    "int32_logic": 0.1,
}

OP_KINDS: tuple[str, ...] = tuple(ENERGY_45NM_PJ)


def energy_pj(counts: Mapping[str, int | float], table: Mapping[str, float] = ENERGY_45NM_PJ) -> float:
    """Total energy in picojoules of an operation-count mapping ``{op_kind: count}``.

    Unknown op kinds raise ``KeyError`` (so a new audit category cannot silently count as free).
    """
    return float(sum(float(n) * table[k] for k, n in counts.items() if n))


@dataclass
class LayerOps:
    """Arithmetic of one conv/linear layer for one inference.

    Attributes:
        name: module qualified name.
        kind: ``"conv"`` or ``"linear"``.
        shift: whether the layer runs as a shift layer.
        macs: multiply-accumulates (terms) for the whole batch.
        outputs: output elements for the whole batch.
        inputs: input elements for the whole batch.
        bias: whether the layer adds a bias.
        weights: number of weights.
    """

    name: str
    kind: str
    shift: bool
    macs: int
    outputs: int
    inputs: int
    bias: bool
    weights: int

    def counts(self, shift: bool | None = None, count_negate: bool = False) -> dict[str, int]:
        """Operation counts ``{op_kind: count}`` of this layer; ``shift`` overrides ``self.shift``."""
        as_shift = self.shift if shift is None else shift
        c = {k: 0 for k in OP_KINDS}
        if as_shift:
            c["int32_shift"] += self.macs
            c["int32_add"] += self.macs
            if count_negate:
                c["int32_logic"] += self.macs
                c["int32_add"] += self.macs
            c["fp32_mul"] += self.outputs + self.inputs   # rescale per output, quantize per input
            if self.bias:
                c["fp32_add"] += self.outputs
        else:
            c["fp32_mul"] += self.macs
            c["fp32_add"] += self.macs + (self.outputs if self.bias else 0)
        return c


def conv_ops(batch: int, in_ch: int, out_ch: int, out_hw: tuple[int, int], in_hw: tuple[int, int],
             kernel: tuple[int, int], groups: int = 1, bias: bool = True, shift: bool = True,
             name: str = "conv") -> LayerOps:
    """Analytic :class:`LayerOps` of a 2-D convolution (NCHW): MACs = N*O*OH*OW*(C/groups)*KH*KW."""
    oh, ow = out_hw
    kh, kw = kernel
    outputs = batch * out_ch * oh * ow
    macs = outputs * (in_ch // groups) * kh * kw
    return LayerOps(name, "conv", shift, macs, outputs, batch * in_ch * in_hw[0] * in_hw[1], bias,
                    out_ch * (in_ch // groups) * kh * kw)


def linear_ops(rows: int, in_features: int, out_features: int, bias: bool = True, shift: bool = True,
               name: str = "linear") -> LayerOps:
    """Analytic :class:`LayerOps` of a linear layer applied to ``rows`` input rows: MACs = rows*K*N."""
    return LayerOps(name, "linear", shift, rows * in_features * out_features, rows * out_features,
                    rows * in_features, bias, in_features * out_features)


def _is_shift_module(m: nn.Module) -> bool:
    return is_shift_layer(m)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def model_layer_ops(model: nn.Module, example_inputs: tuple[torch.Tensor, ...] | torch.Tensor) -> list[LayerOps]:
    """Per-layer arithmetic of ``model`` for one forward pass of ``example_inputs``.

    Runs the model once (eval, no grad) with forward hooks on every conv/linear module (``nn.Conv2d``,
    ``nn.Linear`` and shiftcomp's shift layers, recognised by their ``integer_weights`` method and
    ``kernel_size``/``in_features`` attributes). A module is a shift layer iff it has ``integer_weights``.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    rows: list[LayerOps] = []
    hooks = []

    def make_hook(qname: str):
        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            x = args[0]
            shift = _is_shift_module(mod)
            has_bias = getattr(mod, "bias", None) is not None
            if hasattr(mod, "kernel_size"):
                groups = int(getattr(mod, "groups", 1))
                rows.append(conv_ops(int(x.shape[0]), int(mod.in_channels), int(mod.out_channels),
                                     (int(out.shape[-2]), int(out.shape[-1])),
                                     (int(x.shape[-2]), int(x.shape[-1])), _pair(mod.kernel_size),
                                     groups, has_bias, shift, qname))
            else:
                nrows = int(x.numel() // x.shape[-1])
                rows.append(linear_ops(nrows, int(mod.in_features), int(mod.out_features), has_bias,
                                       shift, qname))
        return hook

    for qname, mod in model.named_modules():
        is_conv = isinstance(mod, nn.Conv2d) or (_is_shift_module(mod) and hasattr(mod, "kernel_size"))
        is_lin = isinstance(mod, nn.Linear) or (_is_shift_module(mod) and hasattr(mod, "in_features"))
        if is_conv or is_lin:
            hooks.append(mod.register_forward_hook(make_hook(qname)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


@dataclass
class EnergyReport:
    """Energy estimate of one model, shift vs float, in picojoules per inference (the example batch)."""

    model: str
    batch: int
    macs: int
    shift_macs: int
    shift_counts: dict[str, int] = field(default_factory=dict)
    float_counts: dict[str, int] = field(default_factory=dict)
    shift_pj: float = 0.0
    float_pj: float = 0.0

    @property
    def ratio(self) -> float:
        """float energy / shift energy (> 1 means the shift model uses less arithmetic energy)."""
        return self.float_pj / self.shift_pj if self.shift_pj else float("inf")

    def row(self) -> dict[str, Any]:
        """Flat dict for CSV/markdown: energies in microjoules per inference."""
        return {"model": self.model, "batch": self.batch, "macs": self.macs, "shift_macs": self.shift_macs,
                "shift_uJ": self.shift_pj * 1e-6, "float_uJ": self.float_pj * 1e-6,
                "float_over_shift": self.ratio}


def _sum_counts(items: Iterable[Mapping[str, int]]) -> dict[str, int]:
    tot = {k: 0 for k in OP_KINDS}
    for c in items:
        for k, v in c.items():
            tot[k] = tot.get(k, 0) + int(v)
    return tot


def estimate_energy(model: nn.Module, example_inputs: tuple[torch.Tensor, ...] | torch.Tensor,
                    name: str = "model", count_negate: bool = False,
                    table: Mapping[str, float] = ENERGY_45NM_PJ) -> EnergyReport:
    """Analytic energy estimate of a (converted) shift model vs the same network in float32.

    The shift side counts each layer as it is in ``model`` (shift layers as shift, unconverted layers as
    float); the float side counts every conv/linear as float32. Returns picojoules per forward pass of
    ``example_inputs`` (the whole batch).
    """
    layers = model_layer_ops(model, example_inputs)
    x0 = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
    sc = _sum_counts(l.counts(count_negate=count_negate) for l in layers)
    fc = _sum_counts(l.counts(shift=False) for l in layers)
    return EnergyReport(name, int(x0.shape[0]) if x0.dim() else 1, sum(l.macs for l in layers),
                        sum(l.macs for l in layers if l.shift), sc, fc, energy_pj(sc, table),
                        energy_pj(fc, table))


# Names the audit may use for op kinds -> our table keys (the audit's exact schema is owned by
# passes/audit.py; unknown names raise so that the mapping is kept honest).
_AUDIT_ALIASES: dict[str, str] = {
    "shift": "int32_shift", "shl": "int32_shift", "shift_left": "int32_shift", "shift_right": "int32_shift",
    "int_shift": "int32_shift", "int32_shift": "int32_shift",
    "add": "int32_add", "sub": "int32_add", "int_add": "int32_add", "int_sub": "int32_add",
    "int32_add": "int32_add", "int64_add": "int32_add",
    "xor": "int32_logic", "bitwise_xor": "int32_logic", "and": "int32_logic", "or": "int32_logic",
    "int32_logic": "int32_logic",
    "mul": "fp32_mul", "fmul": "fp32_mul", "float_mul": "fp32_mul", "fp32_mul": "fp32_mul",
    "fadd": "fp32_add", "float_add": "fp32_add", "fp32_add": "fp32_add",
    "int_mul": "int32_mul", "int32_mul": "int32_mul",
}


def audit_energy(counts: Mapping[str, int | float], aliases: Mapping[str, str] = _AUDIT_ALIASES,
                 table: Mapping[str, float] = ENERGY_45NM_PJ) -> tuple[dict[str, int], float]:
    """Map an audit's per-inference data-path op counts to our op kinds and price them (pJ).

    ``counts`` is a flat ``{op_name: count}``; names are mapped through ``aliases`` (identity for our own
    keys). Returns ``(mapped_counts, picojoules)``.
    """
    mapped: dict[str, int] = {k: 0 for k in OP_KINDS}
    for k, v in counts.items():
        key = aliases.get(k, aliases.get(k.lower(), k))
        if key not in table:
            raise KeyError(f"audit op kind {k!r} has no energy figure; extend shiftcomp.energy aliases")
        mapped[key] += int(v)
    return mapped, energy_pj(mapped, table)


def _opcounts_to_kinds(d: Mapping[str, int]) -> dict[str, int]:
    """One audit ``OpCounts.as_dict()`` -> our op kinds (casts are free: sign extensions/conversions)."""
    c = {k: 0 for k in OP_KINDS}
    c["fp32_mul"] += int(d.get("fmul", 0))
    c["fp32_add"] += int(d.get("fadd", 0))
    c["int32_mul"] += int(d.get("mul", 0)) - int(d.get("fmul", 0))
    c["int32_add"] += int(d.get("add", 0)) - int(d.get("fadd", 0))
    c["int32_shift"] += int(d.get("shift", 0))
    c["int32_logic"] += sum(int(d.get(k, 0)) for k in ("bitwise", "select", "cmp", "minmax"))
    c["int32_add"] += int(d.get("div", 0))          # only index-free div/mod would land here: charged as adds
    return c


def audit_shift_energy(audit: Any, table: Mapping[str, float] = ENERGY_45NM_PJ) -> tuple[dict[str, int], float]:
    """Energy of a compiled shift model's conv/linear arithmetic from the compiled model's multiplication audit.

    ``audit`` is ``CompiledModel.audit`` (``passes.audit.MultiplicationAudit``): we price the shift kernels'
    data path and epilogue and the quantize prologues (the same scope as :func:`estimate_energy`'s shift
    side; BatchNorm/ReLU/pooling glue is excluded on both sides). Unlike the analytic model (one shift and one
    add per term), the audit counts every TIR operation of the term as compiled -- the weight-code decoding
    (abs, mask, select) included -- so it is an upper bound for hardware that stores decoded weights.
    Returns ``(counts, picojoules)``.
    """
    tot = {k: 0 for k in OP_KINDS}
    for part in (audit.datapath, audit.epilogue, audit.prologue):
        for k, v in _opcounts_to_kinds(part.as_dict()).items():
            tot[k] += v
    return tot, energy_pj(tot, table)
