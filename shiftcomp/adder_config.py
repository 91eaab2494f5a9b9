"""Configurations of adder networks: :class:`AdderConfig` (AdderNet) and :class:`ShiftAddConfig` (ShiftAddNet).

An adder layer computes ``y[o] = -Σ_k |x[k] - w[o,k]| (+ bias[o])`` (AdderNet, Chen et al. CVPR 2020).

* ``act_bits = (I, F)``: activations in the signed fixed-point format ``Q(I, F)`` (as for shift layers), or
  ``None`` for float activations (then the weights stay float too).
* ``weight_bits = b``: weights share the activations' ``F`` fraction bits and take ``b`` bits in all
  (sign included): ``w_q = clamp(round(w * 2**F), -2**(b-1), 2**(b-1) - 1)`` (round to nearest, ties to
  even). ``None`` means the activation format's width ``I + F``; ``b`` must exceed ``F`` (at least one
  integer bit, the sign). Needs ``act_bits``.
* ``rounding``: activation rounding, ``"nearest"`` (ties to even) or ``"floor"``.
* ``depth``: convert only the first ``depth`` ``nn.Conv2d``/``nn.Linear`` in module order (``None`` = all).
* ``act_grad``: activation fake-quant gradient, ``"clip"`` or ``"identity"`` (as :class:`ShiftConfig`).
* ``adaptive_lr``: ``η`` of AdderNet's adaptive learning-rate scale: the weight gradient is replaced by
  ``η * sqrt(k) * ∇w / ‖∇w‖₂`` (``k`` = weights in the layer), which any torch optimizer then applies.
  ``None`` (default) leaves the gradient as computed. AdderNet uses ``η = 0.2``.

With 8-bit operands (``I + F = 8`` and ``weight_bits`` 8 or less) the compiled x86 kernel can use the
sum-of-absolute-differences instruction.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from shiftcomp.config import ACT_GRADS, MAX_ACT_BITS, ROUNDINGS, ShiftConfig, _as_int, _as_pair

__all__ = ["AdderConfig", "ShiftAddConfig"]


def _named(fn, value, field: str, owner: str):
    """``fn(value, field)`` (the ShiftConfig validators) with errors naming ``owner.field``."""
    try:
        return fn(value, field)
    except ValueError as e:
        raise ValueError(str(e).replace("ShiftConfig.", owner + ".", 1)) from None


@dataclass
class AdderConfig:
    """Numerics and training options of adder layers (see the module docstring for every field).

    Attributes:
        weight_bits: total bits of the fixed-point weight (sign included), or ``None`` (= ``I + F``).
        act_bits: ``(I, F)`` fixed-point activation format, or ``None`` (float activations and weights).
        rounding: ``"nearest"`` or ``"floor"`` (activations).
        depth: number of ``Conv2d``/``Linear`` layers to convert from the start; ``None`` = all.
        act_grad: ``"clip"`` or ``"identity"``.
        adaptive_lr: ``η`` of the adaptive weight-gradient scale, or ``None``.
    """

    weight_bits: int | None = None
    act_bits: tuple[int, int] | None = None
    rounding: str = "nearest"
    depth: int | None = None
    act_grad: str = "clip"
    adaptive_lr: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check and normalise every field in place; raise ``ValueError`` naming the bad field."""
        if self.act_bits is not None:
            i_bits, f_bits = _named(_as_pair, self.act_bits, "act_bits", "AdderConfig")
            if i_bits < 1 or f_bits < 0 or i_bits + f_bits > MAX_ACT_BITS:
                raise ValueError(f"AdderConfig.act_bits=(I, F) needs I >= 1, F >= 0, I + F <= {MAX_ACT_BITS}, "
                                 f"got ({i_bits}, {f_bits})")
            self.act_bits = (i_bits, f_bits)
        if self.weight_bits is not None:
            if self.act_bits is None:
                raise ValueError("AdderConfig.weight_bits needs act_bits: fixed-point weights share the "
                                 "activations' fraction bits (float activations keep float weights)")
            self.weight_bits = _named(_as_int, self.weight_bits, "weight_bits", "AdderConfig")
            f_bits = self.act_bits[1]
            if not f_bits < self.weight_bits <= MAX_ACT_BITS:
                raise ValueError(f"AdderConfig.weight_bits must be in {f_bits + 1}..{MAX_ACT_BITS} (more than "
                                 f"the F={f_bits} fraction bits it shares), got {self.weight_bits}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"AdderConfig.rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.depth is not None:
            self.depth = _named(_as_int, self.depth, "depth", "AdderConfig")
            if self.depth < 0:
                raise ValueError(f"AdderConfig.depth must be >= 0 or None (all layers), got {self.depth}")
        if self.act_grad not in ACT_GRADS:
            raise ValueError(f"AdderConfig.act_grad must be one of {ACT_GRADS}, got {self.act_grad!r}")
        if self.adaptive_lr is not None:
            if isinstance(self.adaptive_lr, bool) or not float(self.adaptive_lr) > 0:
                raise ValueError(f"AdderConfig.adaptive_lr must be a positive number or None, "
                                 f"got {self.adaptive_lr!r}")
            self.adaptive_lr = float(self.adaptive_lr)

    @property
    def frac_bits(self) -> int | None:
        """``F`` of ``act_bits`` or ``None`` (float mode)."""
        return None if self.act_bits is None else self.act_bits[1]

    @property
    def weight_total_bits(self) -> int | None:
        """Total bits of a fixed-point weight (``weight_bits`` or ``I + F``), ``None`` in float mode."""
        if self.act_bits is None:
            return None
        return self.weight_bits if self.weight_bits is not None else sum(self.act_bits)

    @property
    def weight_int_range(self) -> tuple[int, int] | None:
        """``(-2**(b-1), 2**(b-1) - 1)`` of the fixed-point weights, ``None`` in float mode."""
        b = self.weight_total_bits
        return None if b is None else (-(2 ** (b - 1)), 2 ** (b - 1) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (:meth:`from_dict` inverts it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdderConfig":
        """Build a config from :meth:`to_dict` output (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"AdderConfig.from_dict: unknown field(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass
class ShiftAddConfig:
    """ShiftAddNet (You et al. NeurIPS 2020): every selected ``k×k`` conv becomes a shift conv (the original
    stride, padding, dilation and groups) followed by an adder conv (``out -> out``, ``k×k``, stride 1,
    'same' padding); every selected ``nn.Linear`` becomes a shift linear layer.

    Attributes:
        shift: :class:`ShiftConfig` of the shift half (its ``depth`` is ignored).
        adder: :class:`AdderConfig` of the adder half (its ``depth`` is ignored).
        depth: number of ``Conv2d``/``Linear`` layers to convert from the start; ``None`` = all.
    """

    shift: ShiftConfig = field(default_factory=ShiftConfig)
    adder: AdderConfig = field(default_factory=AdderConfig)
    depth: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.shift, ShiftConfig):
            raise ValueError(f"ShiftAddConfig.shift must be a ShiftConfig, got {type(self.shift).__name__}")
        if not isinstance(self.adder, AdderConfig):
            raise ValueError(f"ShiftAddConfig.adder must be an AdderConfig, got {type(self.adder).__name__}")
        if self.depth is not None:
            self.depth = _named(_as_int, self.depth, "depth", "ShiftAddConfig")
            if self.depth < 0:
                raise ValueError(f"ShiftAddConfig.depth must be >= 0 or None (all layers), got {self.depth}")

    def to_dict(self) -> dict[str, Any]:
        """``{"shift": ShiftConfig.to_dict(), "adder": AdderConfig.to_dict(), "depth": ...}``."""
        return {"shift": self.shift.to_dict(), "adder": self.adder.to_dict(), "depth": self.depth}

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)
