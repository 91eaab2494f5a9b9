"""The shift kernels' spec dataclasses (:class:`DenseSpec`, :class:`Conv2dSpec`) and their code-layout sizes,
numpy only.

Kept apart from the TE compute definitions (:mod:`schedules.compute`, which re-exports everything here) so
that the derivations that rebuild kernel inputs at load time (:mod:`passes.sum_then_shift_plan`,
:mod:`passes.table_gemv_inputs`) need no TVM compiler: ``shiftcomp.load`` runs with a runtime-only TVM.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence, Tuple, Union

import numpy as np

__all__ = ["DenseSpec", "Conv2dSpec", "dense_block", "dense_padded_n", "conv2d_padded_og", "DENSE_BLOCK", "LANE_PAD",
           "ACC_DTYPES", "spec_to_json", "spec_from_json"]

#: accumulator dtypes a shift kernel may use
ACC_DTYPES = ("int32", "int64")
#: output channels are padded to a multiple of this many lanes (dense always, conv when Og >= LANE_PAD)
LANE_PAD = 8
#: widest dense column block (codes of one block and one k: 64 bytes = a cache line)
DENSE_BLOCK = 64

def _round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m


def dense_block(n: int) -> int:
    """Column-block width ``NB`` of the dense code layout: ``min(64, n rounded up to a multiple of 8)``."""
    return min(DENSE_BLOCK, _round_up(int(n), LANE_PAD))


def dense_padded_n(n: int) -> int:
    """Padded output width ``NBLK * NB`` of the dense code layout (a multiple of ``dense_block(n)``)."""
    return _round_up(int(n), dense_block(n))


def conv2d_padded_og(og: int) -> int:
    """Padded per-group output channels ``Og_pad``: ``og`` if ``og < 8`` else rounded up to a multiple of 8."""
    og = int(og)
    return og if og < LANE_PAD else _round_up(og, LANE_PAD)


def _pair(v: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def _quad(v: Union[int, Sequence[int]]) -> Tuple[int, int, int, int]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * 4  # type: ignore[return-value]
    t = tuple(int(x) for x in v)
    if len(t) == 2:
        return (t[0], t[1], t[0], t[1])
    if len(t) != 4:
        raise ValueError(f"padding must be an int, (ph, pw) or (top, left, bottom, right), got {v!r}")
    return t  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    """A shift-dense kernel instance: ``out (batch, out_features) = x_q (batch, in_features) @ W^T``.

    Attributes:
        batch: rows ``M`` of ``x_q`` (>= 1; flatten leading dims into it).
        in_features: ``K`` (>= 1).
        out_features: ``N`` (>= 1).
        frac_bits: ``F``, fraction bits of the fixed-point activations (any int; scale is ``2**(s0-F)``).
        s0: the layer's accumulator shift (smallest shift used), an int in ``[-128, 127]``.
        acc_dtype: ``"int32"`` or ``"int64"`` (the pass proves the accumulator bound).
        has_bias: whether the PrimFunc takes a float32 ``(N,)`` bias.
    """

    batch: int
    in_features: int
    out_features: int
    frac_bits: int = 0
    s0: int = 0
    acc_dtype: str = "int32"
    has_bias: bool = False

    def __post_init__(self) -> None:
        for f in ("batch", "in_features", "out_features"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"DenseSpec.{f} must be >= 1, got {getattr(self, f)}")
            object.__setattr__(self, f, int(getattr(self, f)))
        object.__setattr__(self, "frac_bits", int(self.frac_bits))
        object.__setattr__(self, "s0", int(self.s0))
        object.__setattr__(self, "has_bias", bool(self.has_bias))
        if self.acc_dtype not in ACC_DTYPES:
            raise ValueError(f"acc_dtype must be one of {ACC_DTYPES}, got {self.acc_dtype!r}")

    @property
    def n_block(self) -> int:
        """``NB``, the column-block width of the code layout."""
        return dense_block(self.out_features)

    @property
    def n_padded(self) -> int:
        """``NBLK * NB``: the padded output width (the accumulator's)."""
        return dense_padded_n(self.out_features)

    @property
    def x_shape(self) -> Tuple[int, int]:
        return (self.batch, self.in_features)

    @property
    def weight_shape(self) -> Tuple[int, int, int]:
        """Shape of the int8 code array: ``(NBLK, K, NB)``."""
        return (self.n_padded // self.n_block, self.in_features, self.n_block)

    @property
    def out_shape(self) -> Tuple[int, int]:
        return (self.batch, self.out_features)


@dataclasses.dataclass(frozen=True)
class Conv2dSpec:
    """A shift-conv2d kernel instance (NCHW activations, PyTorch conv semantics, zero padding).

    Attributes:
        batch, in_channels, height, width: input ``(N, C, H, W)``.
        out_channels: ``O`` (divisible by ``groups``).
        kernel_h, kernel_w: ``KH, KW``.
        stride: ``(sh, sw)`` (an int is accepted for both).
        padding: ``(top, left, bottom, right)`` (an int or ``(ph, pw)`` is accepted).
        dilation: ``(dh, dw)``.
        groups: ``G`` (``C`` and ``O`` divisible by it; ``G == C == O`` is depthwise).
        frac_bits, s0, acc_dtype, has_bias: as in :class:`DenseSpec`.
    """

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    frac_bits: int = 0
    s0: int = 0
    acc_dtype: str = "int32"
    has_bias: bool = False

    def __post_init__(self) -> None:
        for f in ("batch", "in_channels", "height", "width", "out_channels", "kernel_h", "kernel_w", "groups"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"Conv2dSpec.{f} must be >= 1, got {getattr(self, f)}")
            object.__setattr__(self, f, int(getattr(self, f)))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation"))
        object.__setattr__(self, "padding", _quad(self.padding))
        object.__setattr__(self, "frac_bits", int(self.frac_bits))
        object.__setattr__(self, "s0", int(self.s0))
        object.__setattr__(self, "has_bias", bool(self.has_bias))
        if self.acc_dtype not in ACC_DTYPES:
            raise ValueError(f"acc_dtype must be one of {ACC_DTYPES}, got {self.acc_dtype!r}")
        if min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(f"bad stride/dilation/padding {self.stride}/{self.dilation}/{self.padding}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"channels {self.in_channels}->{self.out_channels} not divisible by groups={self.groups}")
        oh, ow = self.out_hw
        if oh < 1 or ow < 1:
            raise ValueError(f"empty conv output {oh}x{ow} for {self}")

    @property
    def out_hw(self) -> Tuple[int, int]:
        (sh, sw), (dh, dw) = self.stride, self.dilation
        t, l, b, r = self.padding
        oh = (self.height + t + b - dh * (self.kernel_h - 1) - 1) // sh + 1
        ow = (self.width + l + r - dw * (self.kernel_w - 1) - 1) // sw + 1
        return oh, ow

    @property
    def group_in(self) -> int:
        """``Cg = C // groups``."""
        return self.in_channels // self.groups

    @property
    def group_out(self) -> int:
        """``Og = O // groups``."""
        return self.out_channels // self.groups

    @property
    def group_out_padded(self) -> int:
        """``Og_pad``, see :func:`conv2d_padded_og`."""
        return conv2d_padded_og(self.group_out)

    @property
    def x_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> Tuple[int, int, int, int, int]:
        """Shape of the int8 code array: ``(G, KH, KW, Cg, Og_pad)``."""
        return (self.groups, self.kernel_h, self.kernel_w, self.group_in, self.group_out_padded)

    @property
    def out_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.out_channels) + self.out_hw


_SPECS = {"Conv2dSpec": Conv2dSpec, "DenseSpec": DenseSpec}


def spec_to_json(spec: Union[DenseSpec, Conv2dSpec]) -> dict[str, Any]:
    """JSON form of a spec (what the artifact's derivation parameters store; :func:`spec_from_json` inverts it)."""
    return {"type": type(spec).__name__, "fields": dataclasses.asdict(spec)}


def spec_from_json(d: dict[str, Any]) -> Union[DenseSpec, Conv2dSpec]:
    """Inverse of :func:`spec_to_json`."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d["fields"].items()}
    return _SPECS[d["type"]](**fields)
