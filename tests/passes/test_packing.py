"""Bit-packing of weight codes: exact round trip, bits per weight."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples

from passes.packing import bits_needed, pack_codes, unpack_codes
from shiftcomp.config import ShiftConfig
from shiftcomp.nn import LinearShift


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_pack_unpack_round_trip(data: st.DataObject) -> None:
    shape = tuple(data.draw(st.lists(st.integers(0, 7), min_size=1, max_size=4)))
    vals = data.draw(st.lists(st.integers(-127, 127), min_size=1, max_size=40, unique=True))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 31)))
    codes = rng.choice(np.array(vals, np.int8), size=shape)
    packed = pack_codes(codes)
    back = unpack_codes(packed)
    assert back.dtype == np.int8 and back.shape == codes.shape and np.array_equal(back, codes)
    n = codes.size
    assert packed.bits == (bits_needed(len(np.unique(codes))) if n else 0)
    assert len(packed.data) == (n * packed.bits + 7) // 8


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_packing_bits_per_weight(bits: int) -> None:
    """Q layers use b bits (b+1 with an exact zero weight, documented); PS layers at most b bits.

    (Q at b=8 is checked with 7 of its 8 bits of range: its full default range [-127, 0] spans 128 codes,
    one more than an int8 code holds -- such a layer is refused at lowering, see test_compile.)
    """
    torch.manual_seed(bits)
    q_range = (-63, 0) if bits == 8 else None
    q = LinearShift(64, 256, config=ShiftConfig(mode="Q", weight_bits=bits, shift_range=q_range))
    with torch.no_grad():  # every magnitude in range, both signs
        lo, hi = q.shift_bounds
        e = torch.randint(lo, hi + 1, q.weight.shape).float()
        q.weight.copy_(torch.where(torch.rand(q.weight.shape) < 0.5, -1.0, 1.0) * torch.exp2(e))
    s, g = q.integer_weights()
    s0 = int(s[g != 0].min())
    codes = (g.numpy().astype(np.int64) * (s.numpy() - s0 + 1)).astype(np.int8)
    qbits = 7 if bits == 8 else bits
    assert pack_codes(codes).bits == qbits
    codes[0, 0] = 0  # one exact zero weight: 2**b + 1 symbols
    assert pack_codes(codes).bits == qbits + 1
    ps = LinearShift(64, 256, config=ShiftConfig(mode="PS", weight_bits=bits))
    s, g = ps.integer_weights()
    s0 = int(s[g != 0].min()) if bool((g != 0).any()) else 0
    codes = (g.numpy().astype(np.int64) * (s.numpy() - s0 + 1)).astype(np.int8)
    assert pack_codes(codes).bits <= bits
