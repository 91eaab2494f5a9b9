"""Adder kernels' weight inputs as derivations of the layer's fixed-point weights (for the packed artifact).

An adder layer's *codes* are its fixed-point weights ``w_q`` themselves (docs/numerics.md, adder layers):
``int8`` in the PyTorch weight layout, ``(O, C/G, KH, KW)`` for a conv, ``(O, K)`` for a linear layer. The
artifact bit-packs them (:mod:`passes.packing`) and ``shiftcomp.load`` rebuilds the kernel's array with one
of the numpy derivations below (:mod:`passes.derived_inputs`; numpy only, so a runtime-only TVM can load
the artifact); a linear layer's weights are those of the 1x1 conv it runs as (``(O, K) -> (O, K, 1, 1)``).

Only layers with ``weight_bits <= 8`` are packed (:func:`packable`): the packing format holds ``int8``
codes. Wider fixed-point weights and float-mode weights stay constants of the compiled library.
"""
from __future__ import annotations

import numpy as np

from schedules.adder_layout import psadbw_weights, vsadu4_weights

from .derived_inputs import Derivation, register_derivation

__all__ = ["MAX_PACKED_WEIGHT_BITS", "packable", "kernel_weights", "weight_derivation"]

#: the widest fixed-point adder weight stored bit-packed (the packing format's codes are int8)
MAX_PACKED_WEIGHT_BITS = 8


def packable(weight_bits: int, float_mode: bool) -> bool:
    """True when an adder layer's weights go to the artifact's packed section (else library constants)."""
    return not float_mode and 0 < weight_bits <= MAX_PACKED_WEIGHT_BITS


def _conv_shaped(codes: np.ndarray) -> np.ndarray:
    return codes.reshape(codes.shape + (1, 1)) if codes.ndim == 2 else codes


@register_derivation("adder.plain")
def plain_weights(codes: np.ndarray) -> np.ndarray:
    """The plain kernel's ``W``: ``w_q`` as int8, ``(O, C/G, KH, KW)``."""
    return np.ascontiguousarray(_conv_shaped(codes).astype(np.int8))


@register_derivation("adder.psadbw")
def psadbw_layout(codes: np.ndarray) -> np.ndarray:
    """The ``vpsadbw`` kernel's ``W`` (:func:`schedules.adder_layout.psadbw_weights`)."""
    return psadbw_weights(_conv_shaped(codes))


@register_derivation("adder.vsadu4")
def vsadu4_layout(codes: np.ndarray) -> np.ndarray:
    """The ``__vsadu4`` kernel's ``W`` (:func:`schedules.adder_layout.vsadu4_weights`)."""
    return vsadu4_weights(_conv_shaped(codes))


_BY_VARIANT = (("psadbw", "adder.psadbw"), ("vsadu4", "adder.vsadu4"), ("plain", "adder.plain"))


def weight_derivation(variant: str) -> tuple[str, Derivation]:
    """``(input name, derivation)`` of the weight input of the kernel variant ``variant`` (e.g. ``"psadbw-avx2"``,
    ``"plain-cuda"``; names as :func:`schedules.adder.build_adder_kernel` returns them)."""
    for prefix, fn in _BY_VARIANT:
        if variant.startswith(prefix):
            return prefix, Derivation(fn)
    raise ValueError(f"no weight derivation for adder kernel variant {variant!r}")


def kernel_weights(variant: str, w_q: np.ndarray) -> np.ndarray:
    """The kernel-layout weight array of ``variant`` from 8-bit ``w_q`` (PyTorch layout)."""
    return weight_derivation(variant)[1].apply(np.asarray(w_q))
