"""Segment plans (schedules.segments): they encode exactly the codes' integer weights, and every partial sum
of every segment fits its lane dtype for the activation bound."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples

from schedules.segments import (LANE_BITS, MIN_INT16_SEGMENT, lane_dtype_for, plan_segments,
                                segment_capacity)


def _int_weights(codes: np.ndarray) -> np.ndarray:
    c = codes.reshape(codes.shape[0], -1).astype(np.int64)
    return np.where(c != 0, np.sign(c) << np.maximum(np.abs(c) - 1, 0), 0)


def _segment_partial_sums(plan, x: np.ndarray) -> list[np.ndarray]:
    """Every partial sum of every segment (in kernel order) for one activation vector, as python ints."""
    sums = []
    for s in range(plan.n_segments):
        t0, t1, npos = plan.seg_tptr[s], plan.seg_tptr[s + 1], plan.seg_npos[s]
        signs = np.where(np.arange(t1 - t0) < npos, 1, -1)
        sums.append(np.cumsum(signs * x[plan.term_index[t0:t1]]))
    return sums


codes_strategy = st.tuples(st.integers(1, 6), st.integers(1, 700), st.integers(0, 2**32 - 1),
                           st.sampled_from(["mixed", "one_level", "positive", "sparse", "zero_rows"]))


@pytest.mark.bitexact
@settings(max_examples=examples(150), deadline=None)
@given(codes_strategy, st.sampled_from([(3, 5), (1, 7), (4, 4), (2, 6), (8, 8), (0, 12), (16, 16)]))
def test_plan_encodes_the_weights_within_the_lane_bound(shape, act_bits):
    n_out, row_len, seed, mode = shape
    rng = np.random.default_rng(seed)
    if mode == "one_level":
        codes = rng.choice([-3, 0, 3], size=(n_out, row_len))
    elif mode == "positive":            # long single-sign runs: split at the capacity
        codes = np.full((n_out, row_len), 2)
    elif mode == "sparse":
        codes = rng.integers(-15, 16, size=(n_out, row_len)) * (rng.random((n_out, row_len)) < 0.1)
    else:
        codes = rng.integers(-15, 16, size=(n_out, row_len))
    if mode == "zero_rows":
        codes[rng.random(n_out) < 0.5] = 0
    codes = codes.astype(np.int8)
    x_absmax = 2 ** (sum(act_bits) - 1)
    plan = plan_segments(codes, x_absmax)
    assert np.array_equal(plan.integer_weights(), _int_weights(codes))
    sizes = plan.segment_sizes()
    assert plan.n_terms == int((codes != 0).sum())
    assert np.all(sizes >= 1) and np.all(sizes <= plan.capacity)
    assert np.all(plan.seg_npos <= sizes)
    # the bound: a full segment of saturated activations of either sign stays inside the lane dtype
    lim = 2 ** (LANE_BITS[plan.lane_dtype] - 1) - 1
    for x in (np.full(row_len, -x_absmax, np.int64), np.full(row_len, x_absmax - 1, np.int64),
              rng.integers(-x_absmax, x_absmax, size=row_len)):
        for ps in _segment_partial_sums(plan, x):
            assert np.abs(ps).max() <= lim
        # and the plan's arithmetic is the dot product
        acc = np.zeros(n_out, dtype=object)
        row = np.repeat(np.arange(n_out), np.diff(plan.seg_ptr))
        for s, ps in enumerate(_segment_partial_sums(plan, x)):
            acc[row[s]] += int(ps[-1]) << int(plan.seg_level[s])
        want = [int(v) for v in _int_weights(codes).astype(object) @ x.astype(object)]
        assert list(acc) == want


def test_int16_segments_split_at_255_terms_for_8_bit_activations():
    codes = np.full((2, 700), 1, np.int8)
    codes[1, :300] = -1
    plan = plan_segments(codes, 128)
    assert plan.lane_dtype == "int16" and plan.capacity == 255 == 32767 // 128
    # row 1: 400 positive then 300 negative terms of one level, cut every 255 terms
    assert plan.segment_sizes().tolist() == [255, 255, 190, 255, 255, 190]
    assert plan.seg_npos.tolist() == [255, 255, 190, 255, 145, 0]


def test_lane_dtype_follows_the_activation_format():
    assert lane_dtype_for(2 ** 7) == "int16"                   # 8-bit: 255 terms per segment
    assert segment_capacity("int16", 2 ** 11) == 15            # 12-bit: still int16
    assert lane_dtype_for(2 ** 12) == "int32"                  # 13-bit: < MIN_INT16_SEGMENT terms
    assert segment_capacity("int16", 2 ** 12) < MIN_INT16_SEGMENT
    assert lane_dtype_for(2 ** 15) == "int32" and segment_capacity("int32", 2 ** 15) == 65535
    assert lane_dtype_for(2 ** 31) == "int64"


def test_zero_weights_cost_nothing_and_empty_layers_plan():
    codes = np.zeros((3, 9), np.int8)
    codes[1, 4] = -2
    plan = plan_segments(codes, 128)
    assert plan.seg_ptr.tolist() == [0, 0, 1, 1] and plan.term_index.tolist() == [4]
    assert plan.seg_level.tolist() == [1] and plan.seg_npos.tolist() == [0]
    empty = plan_segments(np.zeros((4, 5), np.int8), 128)
    assert empty.n_segments == 0 and empty.seg_ptr.tolist() == [0] * 5 and empty.seg_tptr.tolist() == [0]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not a weight code"):
        plan_segments(np.full((1, 2), -128, np.int8), 128)
    with pytest.raises(ValueError, match="cannot hold"):
        plan_segments(np.ones((1, 2), np.int8), 2 ** 15, lane_dtype="int16")
    with pytest.raises(ValueError, match="x_absmax"):
        plan_segments(np.ones((1, 2), np.int8), 0)
