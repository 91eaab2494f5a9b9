"""Configuration of a shift (DeepShift) network: weight mode, shift range, activation format.

One :class:`ShiftConfig` describes everything that decides the numerics of the shift layers (docs/numerics.md):

* ``mode``: ``"Q"`` (DeepShift-Q, a float ``weight`` rounded to ``sign * 2**shift`` in every forward) or
  ``"PS"`` (DeepShift-PS, float ``shift`` and ``sign`` parameters trained directly).
* ``weight_bits`` ``b`` (2..8) picks the default shift range (docs/numerics.md, Weights):
  Q ``[-(2**(b-1) - 1), 0]`` (b=5: ``[-15, 0]``), PS ``[-(2**(b-1) - 2), 0]`` (b=5: ``[-14, 0]``).
  An explicit ``shift_range`` overrides it (positive shifts, i.e. weights > 1, are allowed); ``weight_bits``
  is then only a label: the artifact packs the codes a layer really uses (``passes/packing.py``).
* ``act_bits = (I, F)``: signed fixed-point activations ``Q(I, F)`` (``I`` integer bits including the sign,
  ``F`` fraction bits), or ``None`` for float activations.
* ``rounding``: how activations are rounded to fixed point, ``"nearest"`` (ties to even) or ``"floor"``.
* ``depth``: convert only the first ``depth`` ``nn.Conv2d``/``nn.Linear`` in module order (``None`` = all).
* ``freeze_sign``: PS only, the ``sign`` parameter is not trained.
* ``act_grad``: activation fake-quant gradient, ``"clip"`` (straight-through inside the clamp range, zero
  outside) or ``"identity"`` (straight-through everywhere, like the original DeepShift).
* ``zero_free``: DenseShift's codes (Li et al. ICCV 2023): no zero weight, every weight is ``±2**shift``, so
  ``b`` bits give a sign and ``2**(b-1)`` shift levels, default range ``[-(2**(b-1) - 1), 0]`` in both modes.
  Q takes ``sign(0.0)`` as +1; PS rounds the sign to ``+1 if sign >= 0 else -1``.
* ``numerics``: ``"exact"`` (shiftcomp's contract, the default) or ``"deepshift"`` (reproduce the original
  DeepShift code's arithmetic, the default for imported DeepShift checkpoints; see
  :mod:`shiftcomp.deepshift`).

Limits (checked in ``__post_init__``, each violation is a ``ValueError`` naming the field):

* shifts lie in ``[-128, 127]`` (the ``int8`` storage; every ``2**shift`` is an exact float32, below
  ``2**-126`` a subnormal one);
* ``hi - lo <= 127`` (every default range fits). The kernels' ``int8`` weight code
  ``sign * (shift - s0 + 1)`` (docs/numerics.md, Weights) is relative to the smallest shift a layer *uses*; only a
  layer that uses both ends of a 127-wide range (Q, ``weight_bits=8``) would need code +128, which the
  packing pass must reject;
* ``1 <= I``, ``0 <= F``, ``I + F <= 32``: ``x_q`` fits ``int32``;
* with fixed-point activations ``lo - F >= -149``: the output scale ``2**(s0 - F)`` is a float32
  (below ``-126`` a subnormal one).
"""
from __future__ import annotations

import dataclasses
import json
import operator
from dataclasses import dataclass
from typing import Any

__all__ = ["ShiftConfig", "MODES", "ROUNDINGS", "ACT_GRADS", "SHIFT_MIN", "SHIFT_MAX", "MAX_SHIFT_SPAN",
           "MAX_ACT_BITS", "MIN_SCALE_EXP", "NUMERICS"]

MODES = ("Q", "PS")
ROUNDINGS = ("nearest", "floor")
ACT_GRADS = ("clip", "identity")
NUMERICS = ("exact", "deepshift")
SHIFT_MIN = -128          # smallest allowed shift (int8 storage; 2**-128 is an exact subnormal float32)
SHIFT_MAX = 127           # largest allowed shift: 2**127 is the largest float32 power of two; int8 max
MAX_SHIFT_SPAN = 127      # hi - lo <= 127 (Q with weight_bits=8 spans exactly 127)
MIN_SCALE_EXP = -149      # 2**-149 is the smallest float32 (subnormal)
MAX_ACT_BITS = 32         # I + F <= 32: x_q fits int32


def _as_int(value: Any, field: str) -> int:
    """``value`` as a Python int (ints and numpy/torch integer scalars; not bool, not float)."""
    if isinstance(value, bool):
        raise ValueError(f"ShiftConfig.{field} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"ShiftConfig.{field} must be an integer, got {value!r} "
                         f"({type(value).__name__})") from None


def _as_pair(value: Any, field: str) -> tuple[int, int]:
    """``value`` (tuple or list of two integers) as a tuple of two Python ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"ShiftConfig.{field} must be a pair of integers (a tuple or list of 2), "
                         f"got {value!r}")
    return (_as_int(value[0], f"{field}[0]"), _as_int(value[1], f"{field}[1]"))


@dataclass
class ShiftConfig:
    """Numerics of the shift layers (see the module docstring for every field's meaning and limits).

    Attributes:
        mode: ``"Q"`` or ``"PS"`` (case-insensitive on input, stored upper case).
        weight_bits: 2..8; selects the default shift range.
        shift_range: ``(lo, hi)`` integer shifts (weights ``±2**lo .. ±2**hi``) or ``None`` for the default.
        act_bits: ``(I, F)`` fixed-point activation format or ``None`` (float activations).
        rounding: ``"nearest"`` (ties to even) or ``"floor"``; activation rounding.
        depth: number of ``Conv2d``/``Linear`` layers (from the start, module order) to convert; ``None`` = all.
        freeze_sign: PS only; the sign parameter gets ``requires_grad=False``.
        act_grad: ``"clip"`` or ``"identity"``; activation straight-through estimator.
        zero_free: DenseShift codes: no zero weight, signs ±1, ``2**(b-1)`` shift levels.
        numerics: ``"exact"`` or ``"deepshift"`` (the original code's activation clamp, PS-linear inputs and
            conv bias rounding; :mod:`shiftcomp.deepshift`).

    Lists are accepted for ``shift_range`` and ``act_bits`` (e.g. from JSON) and stored as tuples.
    The config is validated at construction; after mutating a field call :meth:`validate` (or build a new
    one with :func:`dataclasses.replace`).
    """

    mode: str = "Q"
    weight_bits: int = 5
    shift_range: tuple[int, int] | None = None
    act_bits: tuple[int, int] | None = None
    rounding: str = "nearest"
    depth: int | None = None
    freeze_sign: bool = False
    act_grad: str = "clip"
    zero_free: bool = False
    numerics: str = "exact"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check and normalise every field in place; raise ``ValueError`` naming the bad field."""
        if not isinstance(self.mode, str) or self.mode.upper() not in MODES:
            raise ValueError(f"ShiftConfig.mode must be one of {MODES}, got {self.mode!r}")
        self.mode = self.mode.upper()

        self.weight_bits = _as_int(self.weight_bits, "weight_bits")
        if not 2 <= self.weight_bits <= 8:
            raise ValueError(f"ShiftConfig.weight_bits must be in 2..8, got {self.weight_bits}")

        if self.shift_range is not None:
            lo, hi = _as_pair(self.shift_range, "shift_range")
            if lo > hi:
                raise ValueError(f"ShiftConfig.shift_range=(lo, hi) needs lo <= hi, got ({lo}, {hi})")
            if lo < SHIFT_MIN or hi > SHIFT_MAX:
                raise ValueError(f"ShiftConfig.shift_range must lie in [{SHIFT_MIN}, {SHIFT_MAX}] "
                                 f"(shift is stored as int8), got ({lo}, {hi})")
            if hi - lo > MAX_SHIFT_SPAN:
                raise ValueError(f"ShiftConfig.shift_range spans {hi - lo} > {MAX_SHIFT_SPAN} shifts; the "
                                 f"int8 weight code sign*(shift-s0+1) cannot hold it, got ({lo}, {hi})")
            self.shift_range = (lo, hi)

        if self.act_bits is not None:
            i_bits, f_bits = _as_pair(self.act_bits, "act_bits")
            if i_bits < 1:
                raise ValueError(f"ShiftConfig.act_bits=(I, F): I (integer bits incl. sign) must be >= 1, "
                                 f"got I={i_bits}")
            if f_bits < 0:
                raise ValueError(f"ShiftConfig.act_bits=(I, F): F (fraction bits) must be >= 0, got F={f_bits}")
            if i_bits + f_bits > MAX_ACT_BITS:
                raise ValueError(f"ShiftConfig.act_bits=(I, F): I + F must be <= {MAX_ACT_BITS} (x_q is an "
                                 f"int32), got I + F = {i_bits + f_bits}")
            self.act_bits = (i_bits, f_bits)

        if self.rounding not in ROUNDINGS:
            raise ValueError(f"ShiftConfig.rounding must be one of {ROUNDINGS}, got {self.rounding!r}")

        if self.depth is not None:
            self.depth = _as_int(self.depth, "depth")
            if self.depth < 0:
                raise ValueError(f"ShiftConfig.depth must be >= 0 or None (all layers), got {self.depth}")

        if not isinstance(self.freeze_sign, bool):
            raise ValueError(f"ShiftConfig.freeze_sign must be a bool, got {self.freeze_sign!r}")
        if self.freeze_sign and self.mode != "PS":
            raise ValueError("ShiftConfig.freeze_sign=True needs mode='PS' (Q mode has no sign parameter)")

        if self.act_grad not in ACT_GRADS:
            raise ValueError(f"ShiftConfig.act_grad must be one of {ACT_GRADS}, got {self.act_grad!r}")

        if not isinstance(self.zero_free, bool):
            raise ValueError(f"ShiftConfig.zero_free must be a bool, got {self.zero_free!r}")
        if self.numerics not in NUMERICS:
            raise ValueError(f"ShiftConfig.numerics must be one of {NUMERICS}, got {self.numerics!r}")

        lo, _ = self.shift_bounds
        if self.act_bits is not None and lo - self.act_bits[1] < MIN_SCALE_EXP:
            raise ValueError(
                f"ShiftConfig: shift_range lo={lo} with F={self.act_bits[1]} fraction bits gives an output "
                f"scale 2**{lo - self.act_bits[1]} below the smallest float32 (2**{MIN_SCALE_EXP}); "
                f"narrow the shift range or use fewer fraction bits")

    # ------------------------------------------------------------------ derived
    @property
    def shift_bounds(self) -> tuple[int, int]:
        """The resolved shift range ``(lo, hi)`` (integers, ``lo <= hi``).

        ``shift_range`` when given, else the default (docs/numerics.md, Weights) for ``(mode, weight_bits)``:
        Q ``(-(2**(b-1) - 1), 0)``, PS ``(-(2**(b-1) - 2), 0)``; zero-free (both modes) ``(-(2**(b-1) - 1), 0)``.
        """
        if self.shift_range is not None:
            return (int(self.shift_range[0]), int(self.shift_range[1]))
        b = self.weight_bits
        if self.mode == "Q" or self.zero_free:
            return (-(2 ** (b - 1) - 1), 0)
        return (-(2 ** (b - 1) - 2), 0)

    @property
    def frac_bits(self) -> int | None:
        """``F`` of ``act_bits`` (fraction bits of the activation format) or ``None`` (float activations)."""
        return None if self.act_bits is None else self.act_bits[1]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (tuples stay tuples; :meth:`from_dict` inverts it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShiftConfig":
        """Build a config from :meth:`to_dict` output (lists become tuples; unknown keys are an error)."""
        if not isinstance(d, dict):
            raise ValueError(f"ShiftConfig.from_dict needs a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"ShiftConfig.from_dict: unknown field(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (pairs are written as lists)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ShiftConfig":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
