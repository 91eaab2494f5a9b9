"""Tuned sum-then-shift shapes (schedules.shape_choices): keys, the file, and where compile finds it."""
from __future__ import annotations

import json

import pytest

from schedules.database import resolve_database
from schedules.shape_choices import (CHOICES_FILE, ShapeChoice, ShapeChoices, choice_key, load_choices,
                                     resolve_choices, save_choices)
from schedules.specs import Conv2dSpec, DenseSpec
from schedules.target import resolve_target, target_key

TGT = {"kind": "llvm", "mcpu": "znver3"}


def test_key_is_the_shape_without_weights_s0_or_bias():
    a = Conv2dSpec(1, 16, 8, 8, 32, 3, 3, padding=1, frac_bits=5, s0=-4, has_bias=True)
    same = Conv2dSpec(1, 16, 8, 8, 32, 3, 3, padding=1, frac_bits=5, s0=-9, has_bias=False)
    other = Conv2dSpec(1, 16, 8, 8, 32, 3, 3, padding=0, frac_bits=5, s0=-4)
    assert choice_key("conv2d", a, "int16") == choice_key("conv2d", same, "int16")
    assert len({choice_key("conv2d", a, "int16"), choice_key("conv2d", other, "int16"),
                choice_key("conv2d", a, "int32")}) == 3
    assert choice_key("dense", DenseSpec(4, 8, 2, frac_bits=5, s0=0), "int16").startswith("dense m4 k8 n2")
    with pytest.raises(TypeError):
        choice_key("conv2d", object(), "int16")


def test_save_merges_and_load_round_trips(tmp_path):
    save_choices(tmp_path, TGT, {"a": (ShapeChoice(16, 4, 1), {"ms": 1.0, "default_ms": 1.0})})
    save_choices(tmp_path, TGT, {"b": (ShapeChoice(8, 2, 3, taps=True), {"ms": 0.5, "default_ms": 0.7})})
    data = json.loads((tmp_path / CHOICES_FILE).read_text())
    assert data["target"] == target_key(resolve_target(TGT)) and set(data["choices"]) == {"a", "b"}
    got = load_choices(tmp_path)
    assert len(got) == 2 and "b" in got
    assert got.get("b") == ShapeChoice(8, 2, 3, True) and got.get("zzz") is None and got.hits == ["b"]
    assert got.get("b").build_kwargs() == {"lanes": 8, "block_vectors": 2, "k_tiles": 3, "taps": True}


def test_entries_without_taps_keep_the_halo_layout_they_were_measured_with(tmp_path):
    """A file written before ``taps`` existed was measured with the halo layout first: it reads as taps=False,
    so compile rebuilds the kernel that was timed."""
    (tmp_path / CHOICES_FILE).write_text(json.dumps(
        {"version": 1, "choices": {"k": {"lanes": 32, "block_vectors": 4, "k_tiles": 1, "ms": 1.0}}}))
    assert load_choices(tmp_path).get("k") == ShapeChoice(32, 4, 1, taps=False)


def test_bad_files_are_refused(tmp_path):
    (tmp_path / CHOICES_FILE).write_text(json.dumps({"version": 99, "choices": {}}))
    with pytest.raises(ValueError, match="not a sum-then-shift choices file"):
        load_choices(tmp_path)
    (tmp_path / CHOICES_FILE).write_text(json.dumps({"version": 1, "choices": {"k": {"lanes": "x"}}}))
    with pytest.raises(ValueError, match="integer lanes"):
        load_choices(tmp_path)
    (tmp_path / CHOICES_FILE).write_text(json.dumps(
        {"version": 1, "choices": {"k": {"lanes": 8, "block_vectors": 2, "k_tiles": 1, "taps": "yes"}}}))
    with pytest.raises(ValueError, match="boolean taps"):
        load_choices(tmp_path)


def test_found_by_the_database_folder_rules(tmp_path):
    tgt = resolve_target(TGT)
    assert len(resolve_choices(None, tgt)) == 0 and len(resolve_choices(tmp_path, tgt)) == 0
    sub = tmp_path / target_key(tgt)
    save_choices(sub, tgt, {"k": (ShapeChoice(16, 4, 2), {})})
    found = resolve_choices(str(tmp_path), tgt)          # the <target_key>/ sub-folder
    assert isinstance(found, ShapeChoices) and len(found) == 1 and found.where == str(sub / CHOICES_FILE)
    assert len(resolve_choices(sub, tgt)) == 1
    # a folder with shapes but no MetaSchedule database is a valid `tuned=` (default schedules otherwise)
    assert resolve_database(str(tmp_path), tgt) == (None, None)
    with pytest.raises(ValueError, match="no tuning database"):
        resolve_database(str(tmp_path / "empty"), tgt)
