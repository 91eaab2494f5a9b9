"""passes/adder_weights.py: adder kernels' weight arrays as derivations of the packed 8-bit w_q."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis_support import examples

import shiftcomp as sc
from lowering_support import lowered
from passes.adder_weights import kernel_weights, packable, weight_derivation
from passes.derived_inputs import Derivation
from passes.lift_weights import lift_shift_weights
from passes.packing import pack_codes, unpack_codes
from schedules.adder import psadbw_weights, vsadu4_weights


@st.composite
def w_q(draw):
    bits = draw(st.integers(1, 8))
    dense = draw(st.booleans())
    shape = ((draw(st.integers(1, 5)), draw(st.integers(1, 20))) if dense else
             (draw(st.integers(1, 4)), draw(st.integers(1, 11)), draw(st.integers(1, 3)), draw(st.integers(1, 3))))
    seed = draw(st.integers(0, 2**31 - 1))
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    return np.random.default_rng(seed).integers(lo, hi + 1, size=shape).astype(np.int8)


@settings(max_examples=examples(60), deadline=None)
@given(w_q())
def test_derivations_equal_the_kernel_layouts_and_survive_packing(w) -> None:
    conv = w.reshape(w.shape + (1, 1)) if w.ndim == 2 else w
    wide = conv.astype(np.int64)                  # what the lowering used to hand the layout functions
    expected = {"psadbw-avx2": psadbw_weights(wide), "psadbw-avx512": psadbw_weights(wide),
                "vsadu4-cuda": vsadu4_weights(wide), "plain": wide.astype(np.int8), "plain-cuda": wide.astype(np.int8)}
    restored = unpack_codes(pack_codes(w))
    for variant, array in expected.items():
        name, how = weight_derivation(variant)
        assert variant.startswith(name)
        got = Derivation.from_json(how.to_json()).apply(restored)
        assert got.dtype == array.dtype and np.array_equal(got, array), variant
        assert np.array_equal(kernel_weights(variant, w), array)


def test_full_int8_range_packs_in_8_bits() -> None:
    w = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)[np.random.default_rng(0).permutation(16)]
    packed = pack_codes(w)
    assert packed.bits == 8 and len(packed.codebook) == 256 and len(packed.data) == w.size
    assert np.array_equal(unpack_codes(packed), w)


def test_packable_and_unknown_variant() -> None:
    assert packable(8, False) and packable(2, False)
    assert not packable(9, False) and not packable(16, False) and not packable(0, True) and not packable(8, True)
    with pytest.raises(ValueError, match="no weight derivation"):
        weight_derivation("winograd")


def test_adder_kernels_weights_are_lifted_unless_float_or_wide() -> None:
    torch.manual_seed(0)
    layers = torch.nn.ModuleList([
        sc.nn.Conv2dAdder(3, 4, 3, padding=1, config=sc.AdderConfig(act_bits=(3, 5))),            # 8 bits: lifted
        sc.nn.Conv2dAdder(3, 4, 3, padding=1, config=sc.AdderConfig(act_bits=(8, 8))),            # 16 bits: constant
        sc.nn.Conv2dAdder(3, 4, 3, padding=1, config=sc.AdderConfig(act_bits=None)),               # float: constant
    ])

    class Three(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = layers

        def forward(self, x):
            return self.a(x), self.b(x), self.c(x)

    mod, report = lowered(Three(), torch.randn(1, 3, 5, 5))
    lifted_mod, lifted = lift_shift_weights(mod, report=report)
    assert lifted.layers == ["a"] and lifted.names == ["w_a__psadbw"]
    assert [d.fn for d in lifted.derive] == ["adder.psadbw"]
    assert np.array_equal(lifted.arrays[0], report.layers["a"].codes)
    assert np.array_equal(report.layers["a"].logical_codes, layers[0].integer_weights().numpy().astype(np.int8))
    assert report.layers["b"].logical_codes is None and report.layers["c"].logical_codes is None
    assert len(lifted_mod["main"].params) == 2
