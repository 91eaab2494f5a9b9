"""The numpy-only spec dataclasses: the JSON form the artifact's derivation parameters store round-trips, and
``schedules.compute`` re-exports the same classes."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_support import examples

from schedules import compute
from schedules.specs import Conv2dSpec, DenseSpec, spec_from_json, spec_to_json


def test_compute_reexports_the_specs() -> None:
    assert compute.Conv2dSpec is Conv2dSpec and compute.DenseSpec is DenseSpec


@settings(max_examples=examples(50), deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(1, 2),
       st.sampled_from(["int32", "int64"]), st.booleans(), st.integers(-20, 20))
def test_conv_spec_json_round_trip(groups, kh, stride, pad, dil, acc, bias, s0) -> None:
    spec = Conv2dSpec(2, 2 * groups, 9, 7, 3 * groups, kh, 3, stride=(stride, 1), padding=(pad, 0, 1, pad),
                      dilation=(dil, 1), groups=groups, frac_bits=5, s0=s0, acc_dtype=acc, has_bias=bias)
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


def test_dense_spec_json_round_trip() -> None:
    spec = DenseSpec(1, 300, 70, frac_bits=5, s0=-14, acc_dtype="int64", has_bias=True)
    d = json.loads(json.dumps(spec_to_json(spec)))
    assert d["type"] == "DenseSpec" and spec_from_json(d) == spec
