"""Input-channel tiles of the sum-then-shift plans (schedules.sum_then_shift_layout): the tiles partition the
input channels, and the tiled plan encodes exactly the layer's weights, split by tile."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples

from schedules.compute import Conv2dSpec, DenseSpec
from schedules.segments import plan_segments
from schedules.sum_then_shift_layout import (PLANE_ALIGN, conv_layout, derive_conv2d_inputs, derive_dense_inputs,
                                             input_tiles, odd_line_plane, pack_numpy, tile_code_rows)


@settings(max_examples=examples(100), deadline=None)
@given(st.integers(1, 600), st.integers(1, 40))
def test_input_tiles_partition_the_channels_evenly(n_in, k_tiles):
    tiles = input_tiles(n_in, k_tiles)
    assert len(tiles) == min(n_in, k_tiles)
    assert tiles[0][0] == 0 and tiles[-1][1] == n_in
    assert all(a[1] == b[0] for a, b in zip(tiles, tiles[1:]))
    sizes = [b - a for a, b in tiles]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@pytest.mark.bitexact
@settings(max_examples=examples(100), deadline=None)
@given(st.integers(1, 9), st.integers(1, 70), st.sampled_from([1, 4, 9]), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_tiled_plan_encodes_the_weights_tile_by_tile(n_out, n_in, taps, k_tiles, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-7, 8, size=(n_out, n_in, taps)).astype(np.int8)
    rows = tile_code_rows(codes, n_in, k_tiles)
    kt = min(k_tiles, n_in) if k_tiles > 1 else 1
    assert rows.shape == (kt * n_out, n_in * taps)
    plan = plan_segments(rows, 128)
    w = plan.integer_weights().reshape(kt, n_out, n_in, taps)
    whole = np.where(codes != 0, np.sign(codes).astype(np.int64) << np.maximum(np.abs(codes) - 1, 0), 0)
    assert np.array_equal(w.sum(axis=0), whole)
    for t, (a, b) in enumerate(input_tiles(n_in, kt)):        # tile t holds exactly its channels' terms
        assert not w[t, :, :a].any() and not w[t, :, b:].any()


def test_tiled_derivation_has_one_plan_row_per_output_and_tile():
    rng = np.random.default_rng(0)
    spec = Conv2dSpec(1, 40, 6, 6, 5, 3, 3, padding=1, frac_bits=5, s0=-4)
    codes = rng.integers(-5, 6, size=(5, 40, 3, 3)).astype(np.int8)
    one = derive_conv2d_inputs(spec, codes, 128, tail=32)
    three = derive_conv2d_inputs(spec, codes, 128, tail=32, k_tiles=3)
    assert one[0].shape == (5 + 1,) and three[0].shape == (3 * 5 + 1,)
    # the same terms (offsets) in both, only grouped differently
    assert sorted(one[4].tolist()) == sorted(three[4].tolist())
    dense = DenseSpec(4, 50, 3, frac_bits=5, s0=-4)
    d2 = derive_dense_inputs(dense, rng.integers(-5, 6, size=(3, 50)).astype(np.int8), 128, tail=16, k_tiles=2)
    assert d2[0].shape == (2 * 3 + 1,)


def test_padded_runs_encode_the_same_weights():
    """``term_multiple``: every positive and negative run padded with zero-tail offsets to a multiple of it;
    without it (artifacts written before) the plan is the exact one."""
    rng = np.random.default_rng(3)
    spec = Conv2dSpec(1, 6, 4, 4, 5, 3, 3, 1, 1, 1, 1, 5, -4, "int32", False)
    codes = rng.integers(-6, 7, size=(5, 6, 3, 3)).astype(np.int8)
    codes[2] = 0
    exact = derive_conv2d_inputs(spec, codes, 128, tail=16, row_align=16)
    padded = derive_conv2d_inputs(spec, codes, 128, tail=16, row_align=16, term_multiple=4)
    assert [a.tolist() for a in derive_conv2d_inputs(spec, codes, 128, 16, 16, 1, 1)] == [a.tolist() for a in exact]
    seg_ptr, level, npos, tptr, off = padded
    assert np.array_equal(seg_ptr, exact[0]) and np.array_equal(level, exact[1])
    nneg = np.diff(tptr) - npos
    assert not (npos % 4).any() and not (nneg % 4).any()
    zero = conv_layout(spec, 16, 16).zero_offset
    for s in range(level.size):
        for sign, (a, b), (ea, eb) in ((1, (tptr[s], tptr[s] + npos[s]), (exact[3][s], exact[3][s] + exact[2][s])),
                                       (-1, (tptr[s] + npos[s], tptr[s + 1]),
                                        (exact[3][s] + exact[2][s], exact[3][s + 1]))):
            real = off[a:b][off[a:b] != zero]
            assert real.tolist() == exact[4][ea:eb].tolist(), (s, sign)
            assert b - a - real.size < 4


def test_odd_line_planes():
    """Planes round up to the alignment, then to an odd number of cache lines (``line`` elements each)."""
    assert odd_line_plane(256, 32) == 288 and odd_line_plane(257, 32) == 288 and odd_line_plane(288, 32) == 288
    assert odd_line_plane(256, 0) == 256 and odd_line_plane(10, 0) == PLANE_ALIGN
    assert odd_line_plane(256, 16) == 272                   # int32 lanes: 16 per 64-byte line, 17 lines
    assert all((odd_line_plane(n, 32) // 32) % 2 == 1 for n in range(1, 2000, 7))


@pytest.mark.parametrize("taps", [0, 1])
def test_odd_line_offsets_read_what_aligned_ones_read(taps):
    """The plan with odd-line planes and the plan of an artifact written before them (no ``odd_lines``) read
    the same activation at every term, each from the packed buffer of its own layout."""
    rng = np.random.default_rng(4)
    spec = Conv2dSpec(2, 6, 14, 14, 5, 3, 3, 1, 1, 1, 1, 5, -4, "int32", False)
    codes = rng.integers(-6, 7, size=(5, 6, 3, 3)).astype(np.int8)
    x = rng.integers(-128, 128, size=spec.x_shape)
    old = derive_conv2d_inputs(spec, codes, 128, tail=64, row_align=16, taps=taps)
    new = derive_conv2d_inputs(spec, codes, 128, tail=64, row_align=16, taps=taps, odd_lines=32)
    lay_old, lay_new = conv_layout(spec, 64, 16, bool(taps)), conv_layout(spec, 64, 16, bool(taps), 32)
    assert lay_old.plane % 64 == 0 and (lay_new.plane // 32) % 2 == 1
    assert all(np.array_equal(a, b) for a, b in zip(old[:4], new[:4])) and not np.array_equal(old[4], new[4])
    packed_old = pack_numpy(lay_old, x, "int16").reshape(spec.batch, -1)
    packed_new = pack_numpy(lay_new, x, "int16").reshape(spec.batch, -1)
    for p_old, p_new in zip(packed_old, packed_new):
        for p in (0, 17, 100):                               # any output pixel: a fixed shift of every offset
            assert np.array_equal(p_old[old[4] + p], p_new[new[4] + p])
