"""ShiftConfig: defaults (docs/numerics.md, Weights), validation, serialisation."""
from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis_support import examples

from shiftcomp import ShiftConfig
from shiftcomp.config import MAX_SHIFT_SPAN, SHIFT_MAX, SHIFT_MIN

SETTINGS = settings(max_examples=examples(60), deadline=None)


def test_defaults():
    c = ShiftConfig()
    assert (c.mode, c.weight_bits, c.shift_range, c.act_bits, c.rounding, c.depth, c.freeze_sign, c.act_grad) == (
        "Q", 5, None, None, "nearest", None, False, "clip")
    assert c.shift_bounds == (-15, 0)
    assert ShiftConfig(mode="PS").shift_bounds == (-14, 0)
    assert c.frac_bits is None and ShiftConfig(act_bits=(3, 5)).frac_bits == 5


@pytest.mark.parametrize("b", range(2, 9))
def test_default_ranges_every_bit_width(b):
    assert ShiftConfig(mode="Q", weight_bits=b).shift_bounds == (-(2 ** (b - 1) - 1), 0)
    assert ShiftConfig(mode="PS", weight_bits=b).shift_bounds == (-(2 ** (b - 1) - 2), 0)
    # every default range is valid together with the widest fixed-point format
    ShiftConfig(mode="Q", weight_bits=b, act_bits=(16, 16))


def test_user_ranges_and_normalisation():
    c = ShiftConfig(mode="ps", shift_range=[-3, 4], act_bits=[3, 5])
    assert c.mode == "PS"
    assert c.shift_range == (-3, 4) and isinstance(c.shift_range, tuple)
    assert c.act_bits == (3, 5) and isinstance(c.act_bits, tuple)
    assert c.shift_bounds == (-3, 4)                          # positive shifts allowed
    assert ShiftConfig(shift_range=(2, 2)).shift_bounds == (2, 2)
    assert ShiftConfig(shift_range=(SHIFT_MAX - MAX_SHIFT_SPAN, SHIFT_MAX)).shift_bounds[1] == SHIFT_MAX
    assert ShiftConfig(act_bits=(1, 0)).act_bits == (1, 0)
    assert ShiftConfig(act_bits=(1, 31)).act_bits == (1, 31)
    assert ShiftConfig(depth=0).depth == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "X"}, "mode"),
    ({"mode": 3}, "mode"),
    ({"weight_bits": 1}, "weight_bits"),
    ({"weight_bits": 9}, "weight_bits"),
    ({"weight_bits": 5.0}, "weight_bits"),
    ({"weight_bits": True}, "weight_bits"),
    ({"shift_range": (0, -1)}, "lo <= hi"),
    ({"shift_range": (-3,)}, "shift_range"),
    ({"shift_range": "ab"}, "shift_range"),
    ({"shift_range": (-1.5, 0)}, "shift_range"),
    ({"shift_range": (SHIFT_MIN - 1, 0)}, "shift_range"),
    ({"shift_range": (0, SHIFT_MAX + 1)}, "shift_range"),
    ({"shift_range": (-100, 100)}, "spans"),
    ({"act_bits": (0, 8)}, "I"),
    ({"act_bits": (3, -1)}, "F"),
    ({"act_bits": (16, 17)}, "I \\+ F"),
    ({"act_bits": (3,)}, "act_bits"),
    ({"rounding": "stochastic"}, "rounding"),
    ({"depth": -1}, "depth"),
    ({"depth": 1.5}, "depth"),
    ({"freeze_sign": 1}, "freeze_sign"),
    ({"freeze_sign": True}, "PS"),                        # Q has no sign parameter
    ({"act_grad": "ste"}, "act_grad"),
    ({"shift_range": (-128, -1), "act_bits": (1, 31)}, "scale"),   # 2**(lo - F) below float32
])
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShiftConfig(**kwargs)


def test_validate_after_mutation():
    c = ShiftConfig()
    c.weight_bits = 12
    with pytest.raises(ValueError, match="weight_bits"):
        c.validate()
    with pytest.raises(ValueError, match="weight_bits"):
        dataclasses.replace(ShiftConfig(), weight_bits=0)


configs = st.builds(
    ShiftConfig,
    mode=st.sampled_from(["Q", "PS"]),
    weight_bits=st.integers(2, 8),
    shift_range=st.one_of(st.none(), st.tuples(st.integers(-20, 0), st.integers(0, 10))),
    act_bits=st.one_of(st.none(), st.tuples(st.integers(1, 16), st.integers(0, 16))),
    rounding=st.sampled_from(["nearest", "floor"]),
    depth=st.one_of(st.none(), st.integers(0, 50)),
    act_grad=st.sampled_from(["clip", "identity"]),
)


@SETTINGS
@given(configs)
def test_round_trip(c):
    d = c.to_dict()
    assert ShiftConfig.from_dict(d) == c
    j = c.to_json()
    json.loads(j)
    c2 = ShiftConfig.from_json(j)
    assert c2 == c
    assert c2.shift_bounds == c.shift_bounds
    for f in ("shift_range", "act_bits"):
        v = getattr(c2, f)
        assert v is None or isinstance(v, tuple)


def test_from_dict_errors():
    with pytest.raises(ValueError, match="unknown field"):
        ShiftConfig.from_dict({"mode": "Q", "bits": 5})
    with pytest.raises(ValueError, match="dict"):
        ShiftConfig.from_dict([("mode", "Q")])
    assert ShiftConfig.from_dict({}) == ShiftConfig()
