"""Tuning the sum-then-shift kernels' shapes (shiftcomp.tune.shapes): measured on a real model, written where
compile finds them, applied per layer shape, and the bits never change."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import shiftcomp as sc
from schedules.shape_choices import ShapeChoice, load_choices, save_choices
from schedules.target import resolve_target
from shiftcomp.bench.cases import default_shift_config
from shiftcomp.reference import exact
from shiftcomp.tune.shapes import candidates, shape_requests, tune_shapes


def _convnet():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(64, 64, 3, padding=1, groups=64))         # depthwise: no shape to tune
    return sc.convert(net, default_shift_config()).eval(), torch.randn(1, 3, 8, 8)


def test_candidates_start_with_the_default_and_bound_the_tiles():
    cands = candidates(ShapeChoice(32, 2, 3), n_in=64)
    assert cands[0] == ShapeChoice(32, 2, 3) and len(cands) == len(set(cands))
    assert {c.lanes for c in cands} == {32, 16} and {c.block_vectors for c in cands} == {2, 4}
    assert {c.k_tiles for c in cands} == {3, 1, 2, 4}
    assert {c.k_tiles for c in candidates(ShapeChoice(8, 4, 1), n_in=20)} == {1}
    assert {c.lanes for c in candidates(ShapeChoice(8, 4, 1), n_in=20)} == {8}
    assert {c.taps for c in cands} == {False}
    both = candidates(ShapeChoice(32, 4, 3, taps=True), n_in=64, other_layout=True)
    assert len(both) == len(set(both)) and both[0] == ShapeChoice(32, 4, 3, True)
    assert {(c.lanes, c.block_vectors, c.k_tiles) for c in both if not c.taps} == {(32, 4, t) for t in (3, 1, 2, 4)}


def test_only_convs_with_halo_rows_try_the_other_layout():
    """A 56-wide 3x3 conv has rows that can carry the halo: the tuner tries both layouts there. A 32-wide one
    (rows of 32 lanes leave no room) and a dense layer have one layout."""
    from types import SimpleNamespace

    from schedules.specs import Conv2dSpec, DenseSpec
    from shiftcomp.tune.shapes import _layouts_differ

    def layer(kind, spec):
        return SimpleNamespace(info=SimpleNamespace(kind=kind), spec=spec)
    conv = lambda w: Conv2dSpec(1, 8, w, w, 8, 3, 3, padding=1, frac_bits=5, s0=-4)  # noqa: E731
    assert _layouts_differ(layer("conv2d", conv(56)), 32)
    assert not _layouts_differ(layer("conv2d", conv(32)), 32)
    assert not _layouts_differ(layer("dense", DenseSpec(4, 8, 2, frac_bits=5, s0=0)), 32)


def test_tuned_shapes_are_what_compile_builds_and_the_bits_do_not_change(tmp_path):
    model, x = _convnet()
    tgt = resolve_target("llvm")
    reqs = shape_requests(model, (x,), tgt)
    assert len(reqs) == 2                                  # the two full convs; not the depthwise one
    results = tune_shapes(model, (x,), tgt, tmp_path, repeat=1)
    assert {r.key for r in results} == set(reqs)
    for r in results:
        assert r.candidates >= 2 and 0 < r.chosen_ms <= r.default_ms
    assert {k for k, _ in load_choices(tmp_path).items()} == set(reqs)

    # a shape nobody would pick, forced for the 64 -> 64 conv: compile builds it, the output is the same
    wide = next(k for k in reqs if " c64 " in k)
    save_choices(tmp_path, tgt, {wide: (ShapeChoice(lanes=8, block_vectors=2, k_tiles=2), {})})
    compiled = sc.compile(model, (x,), tgt, tuned=tmp_path)
    assert f"shape: {wide}" in compiled.tuned_kernels
    low = next(v for v in compiled.layers.values() if v.spec.in_channels == 64 and v.spec.groups == 1)
    assert low.build.weights[0].array.shape == (2 * 64 + 1,)          # seg_ptr: 2 tiles x 64 outputs
    untuned = sc.compile(model, (x,), tgt, tuned=None)
    assert not any(k.startswith("shape:") for k in untuned.tuned_kernels)
    with torch.no_grad():
        y = compiled(x)
        assert torch.equal(y, untuned(x))
        with exact(model):
            assert torch.equal(y, model(x))
    assert np.isfinite(y.numpy()).all()
